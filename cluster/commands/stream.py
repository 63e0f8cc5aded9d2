"""``smoke stream start|status|stop|scale N``: the detection stream on a running Ray cluster.

The stream is a detached, named supervisor actor (``stream.supervisor_name``) in
the ``ray.namespace`` namespace, so it keeps running after this command exits
and any later command finds it by name. The Ray address (``--address`` or
``ray.address``) and the Kafka bootstrap servers (``--bootstrap-servers``,
``kafka.bootstrap_servers`` or ``KAFKA_BOOTSTRAP_SERVERS``) are always explicit.
``smoke stream start --foreground`` stays until interrupted (Ctrl-C, or ``ray job stop``
when it runs as a Ray job) and then checkpoints and stops the stream.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cluster.commands.foreground import connect, run_in_foreground


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stream", help="Kafka -> Ray detection stream (partition workers)")
    sub = parser.add_subparsers(dest="stream_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", help="Ray address (default ray.address)")
        p.add_argument("--name", help="supervisor actor name (default stream.supervisor_name)")

    start = sub.add_parser("start", help="start the supervisor and its workers; returns when all partitions run")
    common(start)
    start.add_argument("--bootstrap-servers", help="Kafka host:port (default kafka.bootstrap_servers)")
    start.add_argument("--workers", type=int, help="PartitionWorker actors (default stream.workers)")
    start.add_argument("--foreground", action="store_true",
                       help="stay, print a status line now and then, checkpoint and stop on Ctrl-C or SIGTERM "
                            "(for `ray job submit`)")
    start.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines (foreground)")
    start.add_argument("--duration", type=float, help="stop after this many seconds (foreground)")
    start.set_defaults(func=_start)

    status = sub.add_parser("status", help="workers, partitions, lag, counts")
    common(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)

    stop = sub.add_parser("stop", help="checkpoint and stop the workers, then the supervisor")
    common(stop)
    stop.set_defaults(func=_stop)

    scale = sub.add_parser("scale", help="change the number of workers while running")
    common(scale)
    scale.add_argument("workers", type=int, help="new number of PartitionWorker actors")
    scale.set_defaults(func=_scale)


def _settings(args: argparse.Namespace):
    settings = args.settings
    stream: dict[str, Any] = {}
    if getattr(args, "name", None):
        stream["supervisor_name"] = args.name
    if getattr(args, "workers", None) and args.stream_command == "start":
        stream["workers"] = args.workers
    if stream:
        settings = settings.model_copy(update={"stream": settings.stream.model_copy(update=stream)})
    return settings


def _start(args: argparse.Namespace) -> int:
    from actors.supervisor import StreamError, start_stream
    from ingest.broker import BrokerError, ensure_topics

    settings = _settings(args)
    bootstrap = args.bootstrap_servers or settings.kafka.bootstrap_servers
    if not bootstrap:
        print("smoke stream start: no Kafka: pass --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS",
              file=sys.stderr)
        return 2
    try:
        ensure_topics(bootstrap, settings.kafka)
    except BrokerError as err:
        print(f"smoke stream start: {err}", file=sys.stderr)
        return 1
    if not connect(args, settings, "smoke stream"):
        return 2
    try:
        start_stream(settings, bootstrap)
    except StreamError as err:
        print(f"smoke stream start: {err}", file=sys.stderr)
        return 1
    print(f"stream {settings.stream.supervisor_name!r} running in namespace {settings.ray.namespace!r} "
          f"with {settings.stream.workers} workers on {bootstrap}", flush=True)
    if args.foreground:
        _run_in_foreground(settings, args.status_every, args.duration)
    return 0


def _run_in_foreground(settings, status_every: float, duration: float | None) -> None:
    """Status lines until interrupted (a job stop sends SIGTERM), then checkpoint and stop the stream."""
    from actors.supervisor import stop_stream, stream_status, total_lag

    def status_line() -> str:
        status = stream_status(settings) or {}
        totals = [w.get("totals", {}) for w in status.get("workers", {}).values()]
        return (f"workers {len(totals)}/{status.get('desired')} "
                f"processed {sum(t.get('processed', 0) for t in totals)} "
                f"rejected {sum(t.get('rejected', 0) for t in totals)} "
                f"alerts {sum(t.get('alerts', 0) for t in totals)} lag {total_lag(status)}")

    run_in_foreground(status_line, lambda: stop_stream(settings), "stream stopped (checkpointed)",
                      status_every, duration)


def _status(args: argparse.Namespace) -> int:
    from actors.supervisor import stream_status

    settings = _settings(args)
    if not connect(args, settings, "smoke stream"):
        return 2
    status = stream_status(settings)
    if status is None:
        print(f"stream {settings.stream.supervisor_name!r}: not running")
        return 3
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print_status(status)
    return 0


def print_status(status: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"stream {status['supervisor']} on {status['topic']} "
                        f"({len(status['workers'])}/{status['desired']} workers, {status['restarts']} restarts)")
    for column in ("worker", "node", "partitions", "lag", "sensors", "processed", "rejected", "alerts",
                   "checkpoints", "model", "last error"):
        table.add_column(column)
    for worker_id, info in sorted(status["workers"].items()):
        if "error" in info:
            table.add_row(worker_id, "", "", "", "", "", "", "", "", "", info["error"])
            continue
        parts = info.get("partitions", {})
        lag = sum(p["lag"] or 0 for p in parts.values())
        totals = info.get("totals", {})
        table.add_row(worker_id, str(info.get("node_id", ""))[:8], ",".join(map(str, sorted(parts))), str(lag),
                      str(sum(p["sensors"] for p in parts.values())), str(totals.get("processed", 0)),
                      str(totals.get("rejected", 0)), str(totals.get("alerts", 0)),
                      str(totals.get("checkpoints", 0)), str(info.get("model_version") or "none"),
                      str(info.get("last_error") or ""))
    Console().print(table)
    for event in status.get("events", [])[-5:]:
        print(f"  {event}")


def _stop(args: argparse.Namespace) -> int:
    from actors.supervisor import stop_stream

    settings = _settings(args)
    if not connect(args, settings, "smoke stream"):
        return 2
    final = stop_stream(settings)
    if final is None:
        print(f"stream {settings.stream.supervisor_name!r}: not running")
        return 0
    processed = sum(w.get("totals", {}).get("processed", 0) for w in final.values())
    print(f"stream {settings.stream.supervisor_name!r} stopped after checkpointing ({len(final)} workers, "
          f"{processed} readings in their last run)")
    return 0


def _scale(args: argparse.Namespace) -> int:
    from actors.supervisor import StreamError, scale_stream

    settings = _settings(args)
    if not connect(args, settings, "smoke stream"):
        return 2
    try:
        assignment = scale_stream(settings, args.workers)
    except StreamError as err:
        print(f"smoke stream scale: {err}", file=sys.stderr)
        return 1
    for worker_id, info in sorted(assignment.items()):
        print(f"{worker_id}: partitions {info['partitions']} on node {info['node_id'][:8]}")
    return 0
