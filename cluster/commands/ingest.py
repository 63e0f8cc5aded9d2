"""``smoke broker|simulate|replay|load|sample-csv``: getting readings into Kafka and the lake.

Kafka is, in order: ``--bootstrap-servers``, ``kafka.bootstrap_servers`` (or
``KAFKA_BOOTSTRAP_SERVERS``), else the embedded broker recorded in
``<ray.run_dir>/broker.json`` by ``smoke broker start``. When none is running,
``smoke simulate`` and ``smoke replay`` start the embedded broker detached and
leave it running (the readings live in its memory; a consumer must be able to
read them after the command ends) and say how to stop it: ``smoke broker stop``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster.embedded_broker import resolve_bootstrap, running_broker, start_detached_broker, state_path
from ingest.settings import Settings


def _quiet_kafka(args: argparse.Namespace) -> None:
    # The library's lines would tear through the progress line; -v brings them back.
    if not getattr(args, "verbose", False):
        from ingest.kafka_clients import quiet_library_logs

        quiet_library_logs()


def register(subparsers: argparse._SubParsersAction) -> None:
    broker = subparsers.add_parser("broker", help="the embedded Kafka-compatible broker (Tansu)")
    action = broker.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    start = action.add_parser("start", help="start it detached on 127.0.0.1 and create the topics")
    start.add_argument("--port", type=int, help="port (default kafka.embedded_port; 0 picks a free one)")
    start.set_defaults(func=_broker_start)
    action.add_parser("stop", help="stop the broker `smoke broker start` started").set_defaults(func=_broker_stop)
    action.add_parser("status", help="is it running, and where").set_defaults(func=_broker_status)

    simulate = subparsers.add_parser("simulate", help="simulated sensor fleet -> Kafka (or files with --out)")
    simulate.add_argument("--sensors", type=int, help="sensors (default simulator.sensors)")
    simulate.add_argument("--rate", type=float, help="readings per second, all sensors (default simulator.rate)")
    simulate.add_argument("--duration", type=float, help="simulated seconds (default simulator.duration_s; "
                                                         "empty runs until Ctrl-C)")
    simulate.add_argument("--time-scale", type=float, help="simulated seconds per wall second (default "
                                                           "simulator.time_scale)")
    simulate.add_argument("--fast", action="store_true", help="as fast as possible, in simulated time")
    simulate.add_argument("--seed", type=int, help="random seed (default simulator.seed)")
    simulate.add_argument("--incident-log", type=Path, help="ground-truth log (default under simulator.out_dir)")
    simulate.add_argument("--out", type=Path, help="write readings.jsonl + incidents.jsonl here instead of Kafka")
    simulate.add_argument("--bootstrap-servers", help="Kafka host:port")
    simulate.set_defaults(func=_simulate)

    replay = subparsers.add_parser("replay", help="replay a Kaggle-format CSV into Kafka")
    replay.add_argument("file", type=Path, help="Kaggle smoke_detection_iot.csv or a file in its format")
    replay.add_argument("--speed", type=float, help="times the recorded pace (default simulator.replay_speed)")
    replay.add_argument("--fast", action="store_true", help="as fast as possible")
    replay.add_argument("--sensors", type=int, default=1, help="deal recording sessions to this many sensor ids")
    replay.add_argument("--bootstrap-servers", help="Kafka host:port")
    replay.set_defaults(func=_replay)

    load = subparsers.add_parser("load", help="load a Kaggle CSV or simulator readings.jsonl into the lake")
    load.add_argument("file", type=Path)
    load.add_argument("--lake", help="lake root, local path or pyarrow URI (default stream.lake_dir)")
    load.add_argument("--sensor-id", default="kaggle-0", help="sensor id of a Kaggle file's rows")
    load.add_argument("--incident-log", type=Path, help="labels for simulator readings (default: beside them)")
    load.set_defaults(func=_load)

    sample = subparsers.add_parser("sample-csv", help="write a synthetic file in the Kaggle format")
    sample.add_argument("file", type=Path)
    sample.add_argument("--rows", type=int, default=10_000)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--bad-rows", type=int, default=0, help="rows to spoil, for trying the loader")
    sample.add_argument("--compare", type=Path, metavar="KAGGLE_CSV",
                        help="then compare the written file with this Kaggle-format file (the real recordings): "
                             "per-column quantiles, floor shares, KS distance")
    sample.set_defaults(func=_sample)


# --- the broker ------------------------------------------------------------------------------

def _broker_start(args: argparse.Namespace) -> int:
    from ingest.broker import BrokerError

    _quiet_kafka(args)
    state = running_broker(args.settings)
    if state is not None:
        print(f"embedded broker already running on {state['bootstrap_servers']} (pid {state['pid']})")
        return 0
    try:
        state = start_detached_broker(args.settings, args.port)
    except BrokerError as err:
        print(f"smoke broker start: {err}", file=sys.stderr)
        return 1
    print(f"embedded broker running on {state['bootstrap_servers']} (pid {state['pid']}); "
          f"export KAFKA_BOOTSTRAP_SERVERS={state['bootstrap_servers']} for other tools")
    return 0


def _broker_stop(args: argparse.Namespace) -> int:
    from ingest.broker import stop_pid

    state = running_broker(args.settings)
    path = state_path(args.settings)
    if state is None:
        path.unlink(missing_ok=True)
        print("embedded broker: not running")
        return 0
    stop_pid(state["pid"])
    path.unlink(missing_ok=True)
    print(f"embedded broker on {state['bootstrap_servers']} stopped (its data is gone: memory only)")
    return 0


def _broker_status(args: argparse.Namespace) -> int:
    state = running_broker(args.settings)
    if state is None:
        print("embedded broker: not running")
        return 3
    print(f"embedded broker running on {state['bootstrap_servers']} (pid {state['pid']}, log {state['log']})")
    return 0


# --- producing and loading -------------------------------------------------------------------

@contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """An event set by SIGTERM (how `smoke down` stops a detached simulator), so the run flushes and reports."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _simulate(args: argparse.Namespace) -> int:
    from ingest.broker import BrokerError
    from ingest.producer import DeliveryError, simulate_to_kafka
    from ingest.simulator import write_simulation

    _quiet_kafka(args)
    settings: Settings = args.settings
    if args.seed is not None:
        settings = settings.model_copy(update={"simulator": settings.simulator.model_copy(update={"seed": args.seed})})
    if args.out is not None:
        config = settings.simulator.model_copy(update={
            k: v for k, v in {"sensors": args.sensors, "rate": args.rate}.items() if v is not None})
        duration = args.duration or config.duration_s
        if duration is None:
            print("smoke simulate --out: give --duration (a file run must end)", file=sys.stderr)
            return 2
        readings, incidents = write_simulation(config, args.out, duration)
        print(f"wrote {readings} and {incidents}")
        return 0
    try:
        bootstrap = resolve_bootstrap(settings, args.bootstrap_servers, "simulate")
        with _stop_on_sigterm() as stop:
            report = simulate_to_kafka(settings, bootstrap, args.duration, sensors=args.sensors, rate=args.rate,
                                       time_scale=args.time_scale, fast=args.fast, incident_log=args.incident_log,
                                       show_progress=True, stop=stop)
    except (BrokerError, DeliveryError) as err:
        print(f"smoke simulate: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 1 if report.failed else 0


def _replay(args: argparse.Namespace) -> int:
    from ingest.broker import BrokerError
    from ingest.kaggle import KaggleFormatError
    from ingest.producer import DeliveryError, replay_csv_to_kafka

    _quiet_kafka(args)
    try:
        bootstrap = resolve_bootstrap(args.settings, args.bootstrap_servers, "replay")
        with _stop_on_sigterm() as stop:
            report = replay_csv_to_kafka(args.settings, bootstrap, args.file, speed=args.speed, fast=args.fast,
                                         sensors=args.sensors, show_progress=True, stop=stop)
    except (BrokerError, DeliveryError, KaggleFormatError) as err:
        print(f"smoke replay: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 1 if report.failed else 0


def _load(args: argparse.Namespace) -> int:
    from ingest.kaggle import KaggleFormatError
    from ingest.lake import LakeError
    from ingest.loader import LoadError, load_file

    lake = args.lake or args.settings.stream.lake_dir
    try:
        report = load_file(args.file, lake, sensor_id=args.sensor_id, incident_log=args.incident_log,
                           show_progress=True)
    except (LoadError, KaggleFormatError, LakeError) as err:
        print(f"smoke load: {err}", file=sys.stderr)
        return 1
    print(report.summary() + f"; lake {lake}" + (f", rejects in {lake}/_rejects" if report.rejected else ""))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from ingest.kaggle_generator import write_kaggle_csv

    made = write_kaggle_csv(args.file, rows=args.rows, seed=args.seed, bad_rows=args.bad_rows)
    print(f"wrote {made.rows:,} rows in {len(made.sessions)} sessions to {made.path} "
          f"({made.fire_share:.1%} labelled fire, {made.label_changes} label changes, {len(made.bad_rows)} bad rows)")
    if args.compare is not None:
        from ingest.kaggle import KaggleFormatError
        from ingest.kaggle_compare import compare_kaggle_files

        try:
            print(compare_kaggle_files(made.path, args.compare).table())
        except KaggleFormatError as err:
            print(f"smoke sample-csv: {err}", file=sys.stderr)
            return 1
    return 0
