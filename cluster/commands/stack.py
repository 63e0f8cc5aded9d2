"""``smoke up | status | down``: the whole local stack in one command each.

``make up`` runs ``smoke up``. What it starts is recorded in
``<ray.run_dir>/stack.json``; ``smoke down`` stops exactly that (never with
``ray stop``). Failures print one line with the cause and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cluster.stack_state import StackState, StateFileError, load_state, state_path

PARTS = ("model", "stream", "serve", "router", "simulator")


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser("up", help="start Ray, Kafka, a first model, the stream, Serve and the simulator")
    up.add_argument("--no-simulator", dest="simulate", action="store_false", help="do not start the simulator")
    up.add_argument("--simulate-seconds", type=float, default=None,
                    help="stop the simulator after this many simulated seconds (default simulator.duration_s; "
                         "empty: until `smoke down`)")
    up.add_argument("--skip", action="append", choices=PARTS, default=[], help="do not start this part "
                                                                                "(repeatable)")
    up.add_argument("--json", action="store_true", help="print the recorded state as JSON at the end")
    up.set_defaults(func=_up, manages_stack=True)

    status = subparsers.add_parser("status", help="health of each part of the running stack")
    status.add_argument("--alert-window", type=float, default=5.0, help="minutes of alerts to count (default 5)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status, manages_stack=True)

    down = subparsers.add_parser("down", help="stop everything `smoke up` started")
    down.add_argument("--no-checkpoint", dest="graceful", action="store_false",
                      help="stop the stream without its final checkpoint (faster; it resumes from the last one)")
    down.set_defaults(func=_down, manages_stack=True)


def _quiet(verbose: bool) -> None:
    # Library INFO lines would tear through the live progress display; -v brings them back.
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
        # Ray warns on every connect that token auth is on; we say so once in our own table.
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        from ingest.kafka_clients import quiet_library_logs

        quiet_library_logs(logging.ERROR)


def _up(args: argparse.Namespace) -> int:
    from cluster.stack import StackError, UpOptions, up, with_stack
    from ingest.progress import Steps

    _quiet(args.verbose)
    options = UpOptions(config_path=args.config, simulate=args.simulate, simulate_seconds=args.simulate_seconds,
                        skip=tuple(args.skip))
    steps = Steps()
    try:
        with steps:
            state = up(args.settings, options, steps)
    except (StackError, StateFileError) as err:
        print(f"smoke up: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # Ray or Kafka failed in a way we did not foresee: still one line
        print(f"smoke up: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(state), indent=2))
    else:
        print_started(state, with_stack(args.settings, state))
    failed = {p: why for p, why in state.unavailable.items() if why.startswith("failed")}
    for part, why in state.unavailable.items():
        print(f"smoke up: {part} {why}", file=sys.stderr)
    return 1 if failed else 0


def print_started(state: StackState, settings) -> None:
    table = Table(title="smoke stack", title_justify="left")
    for column in ("part", "where", "notes"):
        table.add_column(column, overflow="fold")
    table.add_row("Ray", state.ray_address or "", "our head" if state.ray_session_id else "existing cluster")
    if state.dashboard_url:
        table.add_row("  dashboard, jobs", state.dashboard_url, "log in with `ray get-auth-token`")
    if state.metrics_url:
        table.add_row("  metrics", state.metrics_url, "Prometheus text format")
    if state.prometheus_config:
        table.add_row("  Prometheus config", state.prometheus_config,
                      f"prometheus --config.file={state.prometheus_config}")
    if state.ray_temp_dir:
        table.add_row("  temp dir", state.ray_temp_dir, "logs in session_latest/logs")
    kafka_note = "embedded broker, memory only" if state.broker_pid else "external"
    table.add_row("Kafka", state.bootstrap_servers or "", kafka_note)
    rows = {
        "model": (settings.train.registry_dir, f"production {state.model_version}" if state.model_version else ""),
        "stream": (f"namespace {state.namespace}", f"supervisor {state.stream_name}" if state.stream_name else ""),
        "serve": (state.serve_url or "", f"docs at {state.serve_url}/docs" if state.serve_url else ""),
        "router": (f"store {settings.alerting.store_dsn}", f"actor {state.router_name}" if state.router_name else ""),
        "operator": (state.operator_url or "", f"console at {state.console_url}/, API docs at {state.operator_url}"
                                               f"/docs" if state.operator_url else ""),
        "simulator": (state.simulator_log or "", f"pid {state.simulator_pid}" if state.simulator_pid else ""),
    }
    for part, (where, notes) in rows.items():
        missing = state.unavailable.get(part)
        table.add_row(part, where if not missing else "", f"[red]{escape(missing)}[/]" if missing else escape(notes))
    console = Console()
    console.print(table)
    console.print(f"Ray token auth is on; clients read the token from {state.token_source}.", highlight=False)
    if state.dashboard_url:
        console.print(f"Jobs: RAY_AUTH_MODE=token ray job submit --address {state.dashboard_url} -- smoke train "
                      f"... (docs/operations.md#jobs)", highlight=False, soft_wrap=True)
    console.print(f"State: {state_path(settings)}.  Health: smoke status.  Stop: smoke down.", highlight=False)


def _status(args: argparse.Namespace) -> int:
    from cluster.health import check_stack

    _quiet(args.verbose)
    try:
        state = load_state(args.settings)
    except StateFileError as err:
        print(f"smoke status: {err}", file=sys.stderr)
        return 1
    if state is None:
        print(f"smoke status: no stack is running (no {state_path(args.settings)}); start one with `smoke up`")
        return 3
    # Connecting to Ray and reading the alerts topic take seconds: show that something happens.
    with Console(stderr=True).status("checking Ray, Kafka, the stream, Serve, the model, alerts and metrics"):
        checks = check_stack(args.settings, state, alert_window_s=args.alert_window * 60)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        table = Table(title=f"smoke stack ({state_path(args.settings)})", title_justify="left")
        for column in ("part", "health", "detail"):
            table.add_column(column)
        marks = {True: "[green]ok[/]", False: "[red]DOWN[/]", None: "[dim]-[/]"}
        for check in checks:
            table.add_row(check.part, marks[check.healthy], check.detail)
        Console().print(table)
    return 3 if any(c.healthy is False for c in checks) else 0


def _down(args: argparse.Namespace) -> int:
    from cluster.stack import down
    from ingest.progress import Steps

    _quiet(args.verbose)
    steps = Steps()
    try:
        with steps:
            report = down(args.settings, steps, graceful=args.graceful)
    except StateFileError as err:
        print(f"smoke down: {err}", file=sys.stderr)
        return 1
    if report is None:
        print(f"smoke down: nothing to stop (no {state_path(args.settings)})")
        return 0
    if report.left_running:
        print(f"smoke down: still running: {', '.join(report.left_running)}", file=sys.stderr)
        return 1
    print("stack stopped: " + (", ".join(report.stopped) or "nothing was running"))
    return 0
