"""What the commands that start a detached actor share: connecting to Ray, and staying in the foreground.

``smoke stream start`` and ``smoke alerts router start`` both connect a driver to an
explicit address (one clear line when that fails) and, with ``--foreground``, print a
status line now and then until interrupted (Ctrl-C, or the SIGTERM of ``ray job stop``)
or until ``--duration`` has passed, and then stop what they started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable

from cluster.ray_driver import DriverError, address_of, connect_driver
from ingest.settings import Settings


def connect(args: argparse.Namespace, settings: Settings, command: str) -> bool:
    """Connect to ``--address`` (else ``ray.address``); False after one line naming ``command`` and the cause."""
    try:
        connect_driver(address_of(args.address, settings.ray.address), settings.ray.namespace)
    except DriverError as err:
        print(f"{command}: {err}", file=sys.stderr)
        return False
    return True


def run_in_foreground(status_line: Callable[[], str], stop: Callable[[], None], stopped: str,
                      status_every: float, duration: float | None) -> None:
    """Print ``status_line()`` every ``status_every`` s until interrupted or ``duration`` is over; then ``stop()``.

    >>> import contextlib, io
    >>> calls, out = [], io.StringIO()
    >>> with contextlib.redirect_stdout(out):
    ...     run_in_foreground(lambda: "ok", lambda: calls.append("stop"), "done", 0.01, 0.035)
    >>> calls, out.getvalue().splitlines()[-1], out.getvalue().count(" ok") >= 1
    (['stop'], 'done', True)
    """
    interrupted = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: interrupted.set())
    started = time.monotonic()
    try:
        while not interrupted.wait(min(status_every, max(duration - (time.monotonic() - started), 0.0))
                                   if duration is not None else status_every):
            if duration is not None and time.monotonic() - started >= duration:
                break
            print(f"{time.strftime('%H:%M:%S')} {status_line()}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        print(stopped, flush=True)
