"""``smoke alerts``: incidents, acknowledgements, silences and sensors, read from and written to the alert store.

The commands open the store itself (``alerting.store_dsn``, SQLite under ``data/`` by
default), not the running stack: the history is there after ``smoke down`` and ``smoke up``,
and an operator can acknowledge with the stack stopped. The operator API
(:mod:`serve.operator`) offers the same over HTTP.

- ``smoke alerts`` open incidents (needing a person), fire first
- ``smoke alerts history --since 2h`` incidents raised since then, in every state
- ``smoke alerts show ID`` one incident with its events, acknowledgements and deliveries
- ``smoke alerts ack ID --by NAME --outcome nuisance --note ...`` / ``smoke alerts resolve ID --by NAME``
- ``smoke alerts silence --zone Z --for 2h --comment ... --by NAME``, ``smoke alerts silences``,
  ``smoke alerts unsilence ID``
- ``smoke alerts sensors``
- ``smoke alerts router start|status|stop``: the alert router, a detached named actor
  (``alerting.router_name``) that records alert events into the store (alerting/router.py);
  ``start --foreground`` stays until interrupted (for ``ray job submit``)
- ``smoke alerts topic --minutes 10``: the raw messages on the alerts topic (no store; what the router reads)

Exit status: 0 done, 1 unknown id, 2 invalid input (the message names the option) or a state change the
incident's lifecycle does not allow (resolving before acknowledging).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alerting.lifecycle import OUTCOMES
from alerting.time_window import format_instant, parse_duration, parse_instant
from cluster.commands.foreground import connect, run_in_foreground
from ingest.alert_message import FIRE, SILENT, STUCK

KINDS = (FIRE, STUCK, SILENT)
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("alerts", help="alert incidents: list, history, acknowledge, silence, sensors")
    _listing_options(parser)  # `smoke alerts` alone lists the open incidents
    parser.set_defaults(func=_open_incidents)
    sub = parser.add_subparsers(dest="alerts_command", metavar="ACTION")
    register_operator_commands(sub)
    _register_router(sub)


def register_operator_commands(sub: argparse._SubParsersAction) -> None:
    """The operator's subcommands (reading and acting on incidents); the router's are registered apart."""
    listing = sub.add_parser("list", help="open incidents (the default action)")
    _listing_options(listing)
    listing.set_defaults(func=_open_incidents)

    history = sub.add_parser("history", help="incidents recorded in a time window, in every state")
    _listing_options(history)
    history.add_argument("--since", default="24h", help="2h (ago), an ISO 8601 time or epoch seconds (default 24h)")
    history.add_argument("--until", help="same forms; default now")
    history.add_argument("--sensor", help="only this sensor")
    history.add_argument("--zone", help="only this zone")
    history.add_argument("--site", help="only this site")
    history.add_argument("--kind", choices=KINDS, help="only this kind")
    history.set_defaults(func=_history)

    show = sub.add_parser("show", help="one incident with its events, acknowledgements and deliveries")
    show.add_argument("alert_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)

    ack = sub.add_parser("ack", help="acknowledge an incident: who, outcome (BS 5839-1 categories), note")
    ack.add_argument("alert_id")
    ack.add_argument("--by", required=True, help="who acknowledges")
    ack.add_argument("--outcome", required=True, choices=OUTCOMES, help="what it turned out to be")
    ack.add_argument("--note", default="", help="free text for the log book")
    ack.set_defaults(func=_ack)

    resolve = sub.add_parser("resolve", help="resolve an incident (closes it)")
    resolve.add_argument("alert_id")
    resolve.add_argument("--by", required=True, help="who resolves")
    resolve.add_argument("--note", default="")
    resolve.set_defaults(func=_resolve)

    silence = sub.add_parser("silence", help="silence a sensor, zone, site or kind for a while (still recorded, "
                                             "not delivered)")
    silence.add_argument("--sensor", help="match this sensor_id")
    silence.add_argument("--zone", help="match this zone")
    silence.add_argument("--site", help="match this site")
    silence.add_argument("--kind", choices=KINDS, help="match this kind")
    silence.add_argument("--for", dest="duration", required=True, help="how long: 30m, 2h, 1d")
    silence.add_argument("--starts", help="when it starts (ISO 8601 or epoch seconds; default now)")
    silence.add_argument("--comment", required=True, help="why (maintenance, hot works, ...)")
    silence.add_argument("--by", required=True, help="who silences")
    silence.set_defaults(func=_silence)

    silences = sub.add_parser("silences", help="silences in force (--all: also past and future ones)")
    silences.add_argument("--all", action="store_true", help="every silence in the store")
    silences.add_argument("--json", action="store_true", help="print JSON")
    silences.set_defaults(func=_silences)

    unsilence = sub.add_parser("unsilence", help="delete a silence")
    unsilence.add_argument("silence_id", type=int)
    unsilence.set_defaults(func=_unsilence)

    topic = sub.add_parser("topic", help="the raw alert messages of the last minutes, read from the alerts topic")
    topic.add_argument("--minutes", type=float, default=10.0, help="how far back (default 10)")
    topic.add_argument("--bootstrap-servers", help="Kafka host:port (default: the running stack's)")
    topic.add_argument("--json", action="store_true", help="print JSON lines, one alert each")
    topic.set_defaults(func=_topic)

    sensors = sub.add_parser("sensors", help="the sensors table: where each detector is")
    sensors.add_argument("--json", action="store_true", help="print JSON")
    sensors.set_defaults(func=_sensors)


def _listing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-test", dest="include_test", action="store_false", help="leave test alarms out")
    p.add_argument("--limit", type=int, default=200, help="incidents at most (default 200)")


class InvalidOption(ValueError):
    """An option the store would refuse; the message names it."""


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[Any]:
    from alerting.store import AlertStore

    store = AlertStore.open(args.settings.alerting.store_dsn)
    try:
        yield store
    finally:
        store.close()


def _fail(code: int, message: str) -> int:
    print(f"smoke alerts: {message}", file=sys.stderr)
    return code


def _record(record: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(record) if is_dataclass(record) else dict(record)


def _location_label(incident: Any) -> str:
    location = getattr(incident, "location", None)
    return location.label() if location is not None else ""


def _ordered(incidents: list[Any]) -> list[Any]:
    """Fire above trouble above warnings; then the oldest first (it has waited longest)."""
    return sorted(incidents, key=lambda i: (i.kind != FIRE, SEVERITY_ORDER.get(i.severity, 9), _since(i)))


def _since(incident: Any) -> float:
    return incident.raised_at if incident.raised_at is not None else incident.opened_at


def _print_incidents(incidents: list[Any], title: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps([_record(i) for i in incidents], default=str, indent=2))
        return
    console = Console()
    if not incidents:
        console.print(f"{title}: none")
        return
    now = time.time()
    table = Table(title=title, title_justify="left")
    for column in ("alert_id", "kind", "severity", "state", "where", "raised (UTC)", "age", "acknowledged by",
                   "outcome"):
        table.add_column(column)
    for i in incidents:
        marks = [m for m, on in (("test", i.test), ("silenced", i.silenced)) if on]
        table.add_row(i.alert_id[:12], i.kind, i.severity, i.state + (f" ({', '.join(marks)})" if marks else ""),
                      escape(_location_label(i) or i.sensor_id), format_instant(_since(i)),
                      _age(now - _since(i)), escape(i.acknowledged_by or ""), i.outcome or "")
    console.print(table)


def _age(seconds: float) -> str:
    """
    >>> _age(42), _age(600), _age(7300), _age(200000)
    ('42s', '10m', '2h01m', '2d07h')
    """
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _open_incidents(args: argparse.Namespace) -> int:
    with _store(args) as store:
        incidents = store.list_incidents(state="open", include_test=args.include_test, limit=args.limit)
    _print_incidents(_ordered(incidents), "open incidents", args.json)
    return 0


def _history(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        since = parse_instant(args.since, now=now)
        until = parse_instant(args.until, now=now) if args.until else None
    except ValueError as err:
        return _fail(2, f"--since/--until: {err}")
    with _store(args) as store:
        incidents = store.list_incidents(sensor_id=args.sensor, zone=args.zone, site=args.site, kind=args.kind,
                                         since=since, until=until, include_test=args.include_test,
                                         limit=args.limit)
    _print_incidents(incidents, f"incidents raised since {format_instant(since)}", args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        detail = store.incident(args.alert_id)
    if detail is None:
        return _fail(1, f"no incident {args.alert_id}")
    if args.json:
        print(json.dumps(_record(detail), default=str, indent=2))
        return 0
    i = detail.incident
    console = Console()
    console.print(f"[bold]{i.kind}[/] {i.severity} [bold]{i.state}[/]  {escape(_location_label(i) or i.sensor_id)}"
                  f"  (sensor {escape(i.sensor_id)}, alert {i.alert_id})", highlight=False)
    raised = next((e for e in detail.events if e.state == "raised"), None)
    if raised is not None:
        console.print(f"evidence: {escape(json.dumps(raised.evidence, default=str))}", highlight=False,
                      soft_wrap=True)
    timeline = [(e.detected_at, f"{e.state} (event time {format_instant(e.event_time)})") for e in detail.events]
    timeline += [(a.at, f"acknowledged by {a.by}: {a.outcome} {a.note}".rstrip()) for a in detail.acknowledgements]
    if i.escalated_at is not None:
        timeline.append((i.escalated_at, "escalated (not acknowledged in time)"))
    if i.resolved_at is not None:
        timeline.append((i.resolved_at, f"resolved by {i.resolved_by} {i.resolve_note or ''}".rstrip()))
    timeline += [(d.sent_at or d.created_at, f"{d.state} -> {d.channel}: {d.status}"
                  + (f" after {d.attempts} attempts ({d.last_error})" if d.last_error else ""))
                 for d in detail.deliveries]
    for at, what in sorted(timeline, key=lambda t: t[0] or 0):
        console.print(f"  {format_instant(at)}  {escape(what)}", highlight=False)
    return 0


def _ack(args: argparse.Namespace) -> int:
    from alerting.lifecycle import InvalidTransition
    from alerting.store import UnknownIncident

    with _store(args) as store:
        try:
            incident = store.acknowledge(args.alert_id, by=args.by, outcome=args.outcome, note=args.note,
                                         at=time.time())
        except UnknownIncident:
            return _fail(1, f"no incident {args.alert_id}")
        except InvalidTransition as err:
            return _fail(2, f"{args.alert_id}: {err}")
    print(f"{incident.alert_id} acknowledged by {incident.acknowledged_by} ({incident.outcome}); "
          f"state {incident.state}")
    return 0


def _resolve(args: argparse.Namespace) -> int:
    from alerting.lifecycle import InvalidTransition
    from alerting.store import UnknownIncident

    with _store(args) as store:
        try:
            incident = store.resolve(args.alert_id, by=args.by, note=args.note, at=time.time())
        except UnknownIncident:
            return _fail(1, f"no incident {args.alert_id}")
        except InvalidTransition as err:
            return _fail(2, f"{args.alert_id}: {err}")
    print(f"{incident.alert_id} resolved; state {incident.state}")
    return 0


def _silence(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from serve.errors import ApiError
    from serve.operator.routes.silences import silence_spec
    from serve.operator.schemas import SilenceRequest

    now = time.time()
    try:
        duration = parse_duration(args.duration)
        starts = parse_instant(args.starts, now=now) if args.starts else now
    except ValueError as err:
        return _fail(2, f"--for/--starts: {err}")
    # The operator API's validation, so a silence the API refuses is refused here too.
    try:
        request = SilenceRequest(sensor_id=args.sensor, zone=args.zone, site=args.site, kind=args.kind,
                                 starts_at=starts, duration_s=duration, created_by=args.by, comment=args.comment)
        spec = silence_spec(request, now)
    except ValidationError as err:
        first = err.errors()[0]
        return _fail(2, f"{_OPTION.get(str(first['loc'][0]), first['loc'][0])}: {first['msg']}")
    except ApiError as err:
        field = err.errors[0].field if err.errors else None
        return _fail(2, f"{_OPTION.get(field, field)}: {err.errors[0].detail if err.errors else err.message}")
    with _store(args) as store:
        silence = store.add_silence(spec)
    print(f"silence {silence.id}: {_matchers(silence)} until {format_instant(silence.ends_at)} "
          f"(by {silence.created_by}: {silence.comment})")
    return 0


# The options of `smoke alerts silence` for the fields of the operator API's silence request.
_OPTION = {"sensor_id": "--sensor", "zone": "--zone", "site": "--site", "kind": "--kind", "starts_at": "--starts",
           "duration_s": "--for", "ends_at": "--for", "created_by": "--by", "comment": "--comment",
           "matchers": "--sensor/--zone/--site/--kind"}


def _matchers(silence: Any) -> str:
    return ", ".join(f"{m}={getattr(silence, m)}" for m in ("sensor_id", "zone", "site", "kind")
                     if getattr(silence, m) is not None)


def _silences(args: argparse.Namespace) -> int:
    now = time.time()
    with _store(args) as store:
        silences = store.silences(active_at=None if args.all else now)
    if args.json:
        print(json.dumps([_record(s) for s in silences], default=str, indent=2))
        return 0
    console = Console()
    if not silences:
        console.print("silences in force: none" if not args.all else "silences: none")
        return 0
    table = Table(title="silences" if args.all else "silences in force", title_justify="left")
    for column in ("id", "matches", "from (UTC)", "until (UTC)", "by", "comment"):
        table.add_column(column)
    for s in silences:
        table.add_row(str(s.id), escape(_matchers(s)), format_instant(s.starts_at), format_instant(s.ends_at),
                      escape(s.created_by), escape(s.comment))
    console.print(table)
    return 0


def _unsilence(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if not store.delete_silence(args.silence_id):
            return _fail(1, f"no silence {args.silence_id}")
    print(f"silence {args.silence_id} deleted")
    return 0


def _sensors(args: argparse.Namespace) -> int:
    with _store(args) as store:
        sensors = store.sensors()
    if args.json:
        print(json.dumps([_record(s) for s in sensors], default=str, indent=2))
        return 0
    console = Console()
    table = Table(title=f"{len(sensors)} sensors", title_justify="left")
    for column in ("sensor_id", "site", "building", "floor", "zone", "description"):
        table.add_column(column)
    for s in sensors:
        table.add_row(*(escape(str(getattr(s, c) or "")) for c in ("sensor_id", "site", "building", "floor", "zone",
                                                                  "description")))
    console.print(table)
    return 0


def _topic(args: argparse.Namespace) -> int:
    from cluster.health import recent_alerts

    # args.settings already carries the running stack's Kafka (cluster.cli attaches it).
    bootstrap = args.bootstrap_servers or args.settings.kafka.bootstrap_servers
    if not bootstrap:
        return _fail(2, "topic: no Kafka: start the stack with `smoke up` or pass --bootstrap-servers")
    topic = args.settings.kafka.alerts_topic
    try:
        alerts = recent_alerts(bootstrap, topic, args.minutes * 60, security=args.settings.kafka.security)
    except Exception as err:  # kafka-python raises many types; one line is what the operator needs
        print(f"smoke alerts topic: cannot read {topic} on {bootstrap}: {type(err).__name__}: {err}", file=sys.stderr)
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
    if not connect(args, settings, "smoke alerts router"):
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
    from alerting.router import health, router_status, stop_router

    run_in_foreground(lambda: health(router_status(settings), settings.alerting.router_stale_s)[1],
                      lambda: stop_router(settings), "alert router stopped", status_every, duration)


def _router_status(args: argparse.Namespace) -> int:
    from alerting.router import health, router_status

    settings = _router_settings(args)
    if not connect(args, settings, "smoke alerts router"):
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
    if not connect(args, settings, "smoke alerts router"):
        return 2
    final = stop_router(settings)
    if final is None:
        print(f"alert router {settings.alerting.router_name!r}: not running")
        return 0
    print(f"alert router {settings.alerting.router_name!r} stopped after recording "
          f"{final['totals']['recorded']} events")
    return 0
