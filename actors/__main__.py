"""``python -m actors``: run the stream supervisor in the foreground until interrupted.

Made for ``ray job submit --working-dir . -- python -m actors --bootstrap-servers HOST:PORT``
(the job's driver connects to the cluster it runs on) and for local runs with
``--address``. Prints the status every ``--status-every`` seconds; Ctrl-C or a
stopped job checkpoints and stops the workers.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from ingest.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actors", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", help="Kafka host:port (default kafka.bootstrap_servers)")
    parser.add_argument("--address", help="Ray address (default ray.address; inside `ray job submit`: the job's "
                                          "cluster)")
    parser.add_argument("--config", help="settings file (default configs/pipeline.yaml)")
    parser.add_argument("--workers", type=int, help="PartitionWorker actors (default stream.workers)")
    parser.add_argument("--name", help="supervisor actor name (default stream.supervisor_name)")
    parser.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until interrupted)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
    except SettingsError as err:
        print(f"python -m actors: invalid settings: {err}", file=sys.stderr)
        return 2
    update = {k: v for k, v in (("workers", args.workers), ("supervisor_name", args.name)) if v}
    if update:
        settings = settings.model_copy(update={"stream": settings.stream.model_copy(update=update)})
    bootstrap = args.bootstrap_servers or settings.kafka.bootstrap_servers
    if not bootstrap:
        print("python -m actors: pass --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2

    import ray

    from actors.supervisor import StreamError, start_stream, stop_stream, stream_status, total_lag
    from ingest.broker import BrokerError, ensure_topics

    try:
        ensure_topics(bootstrap, settings.kafka)
    except BrokerError as err:
        print(f"python -m actors: {err}", file=sys.stderr)
        return 1
    # Inside `ray job submit` RAY_ADDRESS names the job's cluster and ray.init() uses it;
    # elsewhere the address is given explicitly.
    address = args.address or settings.ray.address
    ray.init(address=address, namespace=settings.ray.namespace, log_to_driver=False)
    # A job stop sends SIGTERM: turn it into the same clean shutdown as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        start_stream(settings, bootstrap)
    except StreamError as err:
        print(f"python -m actors: {err}", file=sys.stderr)
        return 1
    print(f"stream {settings.stream.supervisor_name!r} running ({settings.stream.workers} workers, {bootstrap})",
          flush=True)
    started = time.monotonic()
    try:
        while args.duration is None or time.monotonic() - started < args.duration:
            time.sleep(min(args.status_every, args.duration or args.status_every))
            status = stream_status(settings) or {}
            totals = [w.get("totals", {}) for w in status.get("workers", {}).values()]
            print(f"{time.strftime('%H:%M:%S')} workers {len(totals)}/{status.get('desired')} "
                  f"processed {sum(t.get('processed', 0) for t in totals)} "
                  f"rejected {sum(t.get('rejected', 0) for t in totals)} "
                  f"alerts {sum(t.get('alerts', 0) for t in totals)} lag {total_lag(status)}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stop_stream(settings)
        print("stream stopped (checkpointed)", flush=True)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
