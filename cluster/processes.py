"""Processes the stack starts, found and stopped by their Unix session, never by name.

Everything ``smoke up`` launches (the Ray head, the broker, the simulator) is
started in a new session (``setsid``). Ray's daemons, its dashboard, its
workers and the actors they host all inherit the session of ``ray start``, so
the session id names exactly the processes we started: ``smoke down`` stops
those and nothing else. ``ray stop`` is never used because it kills every Ray
process of the user on the host, including other people's clusters and tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path

PROC = Path("/proc")
log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie waiting to be reaped."""
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def process_name(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def session_pids(sid: int) -> list[int]:
    """Pids of the live processes whose session id is ``sid``."""
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Field 6 of /proc/<pid>/stat is the session id; the command name (field 2) may hold spaces.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return sorted(pids)


def stop_session(sid: int, grace_s: float = 5.0) -> int:
    """SIGTERM every process of session ``sid``, SIGKILL what is left after ``grace_s``; returns how many ran.

    Ray's daemons shut down cleanly on SIGTERM (the raylet kills its workers);
    the grace period lets them, and stragglers get SIGKILL so nothing is left.
    """
    pids = session_pids(sid)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in session_pids(sid):
        log.debug("pid %d (%s) outlived SIGTERM by %.0f s: SIGKILL", pid, process_name(pid), grace_s)
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(pids)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def port_in_use(port: int, hosts: tuple[str, ...] = ("127.0.0.1",)) -> str | None:
    """The first of ``hosts`` on which ``port`` cannot be bound (something listens there), else None."""
    for host in hosts:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return host
    return None

