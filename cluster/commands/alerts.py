"""``smoke alerts``: the alert service from the command line.

- ``smoke alerts`` (no action): alert messages of the last minutes on the alerts topic.
- ``smoke alerts router start|status|stop``: the alert router, a detached named actor
  (``alerting.router_name``) in ``ray.namespace`` that records alert events into the
  store (alerting/router.py). ``start --foreground`` stays until interrupted (Ctrl-C, or
  ``ray job stop`` when it runs as a Ray job) and then stops the router.

The Ray address (``--address`` or ``ray.address``, or the running stack's) and the Kafka
bootstrap servers are always explicit.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cluster.ray_driver import DriverError, address_of, connect_driver


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("alerts", help="alert messages of the last minutes; the alert router")
    parser.add_argument("--minutes", type=float, default=10.0, help="how far back (default 10)")
    parser.add_argument("--bootstrap-servers", help="Kafka host:port (default: the running stack's)")
    parser.add_argument("--json", action="store_true", help="print JSON lines, one alert each")
    parser.set_defaults(func=_recent)
    sub = parser.add_subparsers(dest="alerts_command", metavar="ACTION")
    _register_router(sub)


# --- the router ---------------------------------------------------------------------------------


def _register_router(sub: argparse._SubParsersAction) -> None:
    router = sub.add_parser("router", help="the alert router: alert events from Kafka into the store")
    actions = router.add_subparsers(dest="router_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", help="Ray address (default ray.address)")
        p.add_argument("--name", help="router actor name (default alerting.router_name)")

    start = actions.add_parser("start", help="start the router; returns once it reads every partition")
    common(start)
    start.add_argument("--bootstrap-servers", help="Kafka host:port (default kafka.bootstrap_servers)")
    start.add_argument("--store", help="alert store DSN (default alerting.store_dsn)")
    start.add_argument("--foreground", action="store_true",
                       help="stay, print a status line now and then, stop the router on Ctrl-C or SIGTERM "
                            "(for `ray job submit`)")
    start.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines (foreground)")
    start.add_argument("--duration", type=float, help="stop after this many seconds (foreground)")
    start.set_defaults(func=_router_start)

    status = actions.add_parser("status", help="partitions, lag, events recorded, errors")
    common(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_router_status)

    stop = actions.add_parser("stop", help="stop the router")
    common(stop)
    stop.set_defaults(func=_router_stop)


def _router_settings(args: argparse.Namespace):
    settings = args.settings
    alerting: dict[str, Any] = {}
    if getattr(args, "name", None):
        alerting["router_name"] = args.name
    if getattr(args, "store", None):
        alerting["store_dsn"] = args.store
    if alerting:
        settings = settings.model_copy(update={"alerting": settings.alerting.model_copy(update=alerting)})
    return settings


def _connect(args: argparse.Namespace, settings) -> bool:
    try:
        connect_driver(address_of(args.address, settings.ray.address), settings.ray.namespace)
    except DriverError as err:
        print(f"smoke alerts router: {err}", file=sys.stderr)
        return False
    return True


def _router_start(args: argparse.Namespace) -> int:
    from alerting.router import RouterError, start_router
    from ingest.broker import BrokerError, ensure_topics

    settings = _router_settings(args)
    bootstrap = args.bootstrap_servers or settings.kafka.bootstrap_servers
    if not bootstrap:
        print("smoke alerts router start: no Kafka: pass --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS",
              file=sys.stderr)
        return 2
    try:
        ensure_topics(bootstrap, settings.kafka)
    except BrokerError as err:
        print(f"smoke alerts router start: {err}", file=sys.stderr)
        return 1
    if not _connect(args, settings):
        return 2
    try:
        start_router(settings, bootstrap)
    except RouterError as err:
        print(f"smoke alerts router start: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # the store or the broker refused: one line with the cause
        print(f"smoke alerts router start: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        return 1
    print(f"alert router {settings.alerting.router_name!r} running in namespace {settings.ray.namespace!r}, "
          f"reading {settings.kafka.alerts_topic} on {bootstrap}", flush=True)
    if args.foreground:
        _router_foreground(settings, args.status_every, args.duration)
    return 0


def _router_foreground(settings, status_every: float, duration: float | None) -> None:
    """Status lines until interrupted (a job stop sends SIGTERM), then stop the router."""
    import signal
    import threading
    import time

    from alerting.router import health, router_status, stop_router

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    try:
        while not stop.wait(min(status_every, max(duration - (time.monotonic() - started), 0.0))
                            if duration is not None else status_every):
            if duration is not None and time.monotonic() - started >= duration:
                break
            _, line = health(router_status(settings), settings.alerting.router_stale_s)
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop_router(settings)
        print("alert router stopped", flush=True)


def _router_status(args: argparse.Namespace) -> int:
    from alerting.router import health, router_status

    settings = _router_settings(args)
    if not _connect(args, settings):
        return 2
    try:
        status = router_status(settings)
    except Exception as err:
        print(f"alert router {settings.alerting.router_name!r}: down: does not answer: {err}".splitlines()[0])
        return 3
    if status is None:
        print(f"alert router {settings.alerting.router_name!r}: not running")
        return 3
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    healthy, line = health(status, settings.alerting.router_stale_s)
    print(f"alert router {status['name']!r} ({'ok' if healthy else 'DEGRADED'}) on {status['topic']} "
          f"into {status['store']}: {line}")
    for p, info in sorted(status["partitions"].items()):
        print(f"  partition {p}: next offset {info['next_offset']}, end {info['highwater']}, lag {info['lag']}")
    return 0 if healthy else 3


def _router_stop(args: argparse.Namespace) -> int:
    from alerting.router import stop_router

    settings = _router_settings(args)
    if not _connect(args, settings):
        return 2
    final = stop_router(settings)
    if final is None:
        print(f"alert router {settings.alerting.router_name!r}: not running")
        return 0
    print(f"alert router {settings.alerting.router_name!r} stopped after recording "
          f"{final['totals']['recorded']} events")
    return 0


# --- recent alert messages on the topic ----------------------------------------------------------


def _recent(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cluster.commands.stack import _quiet
    from cluster.health import recent_alerts

    _quiet(args.verbose)
    # args.settings already carries the running stack's Kafka (cluster.cli attaches it).
    bootstrap = args.bootstrap_servers or args.settings.kafka.bootstrap_servers
    if not bootstrap:
        print("smoke alerts: no Kafka: start the stack with `smoke up` or pass --bootstrap-servers", file=sys.stderr)
        return 2
    topic = args.settings.kafka.alerts_topic
    try:
        alerts = recent_alerts(bootstrap, topic, args.minutes * 60)
    except Exception as err:  # kafka-python raises many types; one line is what the operator needs
        print(f"smoke alerts: cannot read {topic} on {bootstrap}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if args.json:
        for alert in alerts:
            print(json.dumps(alert))
        return 0
    table = Table(title=f"{len(alerts)} alert messages on {topic} in the last {args.minutes:g} min",
                  title_justify="left")
    for column in ("event time", "sensor", "kind", "severity", "state", "score", "model", "alert id"):
        table.add_column(column)
    for alert in sorted(alerts, key=lambda a: str(a.get("event_time"))):
        score = alert.get("score")
        table.add_row(str(alert.get("event_time", "")), str(alert.get("sensor_id", "")), str(alert.get("kind", "")),
                      str(alert.get("severity", "")), str(alert.get("state", "")),
                      f"{score:.3f}" if isinstance(score, float) else str(score),
                      str(alert.get("model_version") or ""), str(alert.get("alert_id", ""))[:12])
    Console().print(table)
    return 0


