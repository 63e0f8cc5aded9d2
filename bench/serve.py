"""Benchmark of the prediction API on Ray Serve beside plain uvicorn + FastAPI, in the same run.

Both serve the *same* FastAPI app (``serve.api.create_api``) with the same model,
trained here by the real training code on a generated Kaggle-format CSV: plain
uvicorn runs it in one process with :class:`serve.backend.DirectBackend`; Ray Serve runs
it in ``SmokeDetector`` replicas behind Serve's ingress (HAProxy, with the
The flags of docs/architecture.md ``RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_THROUGHPUT_OPTIMIZED=1``),
with ``@serve.batch`` for requests that overlap and the deployment options of
``configs/serve.yaml``. The ratio therefore measures what Serve adds.

The load generator is a small keep-alive HTTP/1.1 client on asyncio (a full
client library would take a large share of the 2 cores it shares with the
servers). Levels are measured alternately, uvicorn then Serve, so both see the
same minutes of a noisy machine.

    python -m bench.serve                 # writes bench/results/serve.json
    python -m bench.serve --seconds 3 --replicas 1   # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "serve.json"
MODEL_NAME = "smoke-detector"
CONCURRENCY = (1, 8, 32)
BATCH_ROWS = 10_000
READING = {"Temperature": 20.0, "Humidity": 57.36, "TVOC": 0.0, "eCO2": 400.0, "Raw H2": 12306.0,
           "Raw Ethanol": 18520.0, "Pressure": 939.735, "PM1.0": 0.0, "PM2.5": 0.0, "NC0.5": 0.0,
           "NC1.0": 0.0, "NC2.5": 0.0, "sensor_id": "bench-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- load generator ------------------------------------------------------------------------------


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        await reader.readexactly(length)
    elif chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


def _request(port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n").encode() + body


async def _run_load(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict[str, Any]:
    request = _request(port, path, body)
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status = await _exchange(reader, writer, request)
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 2),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 2)}


def measure(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict[str, Any]:
    asyncio.run(_run_load(port, path, body, concurrency, min(0.5, seconds / 4)))  # warm-up
    return asyncio.run(_run_load(port, path, body, concurrency, seconds))


# -- servers -------------------------------------------------------------------------------------


def train_model(root: Path) -> str:
    """A production model trained by the real pipeline (quick mode) in a fresh registry."""
    from ingest.kaggle import write_kaggle_csv
    from ingest.settings import load_settings
    from train.pipeline import train_and_register

    settings = load_settings(environ={})
    settings = settings.model_copy(update={"train": settings.train.model_copy(update={
        "registry_dir": str(root / "registry"), "model_name": MODEL_NAME})})
    csv = root / "kaggle.csv"
    write_kaggle_csv(csv, rows=8000, seed=1)
    train_and_register(settings, csv, quick=True, promote="force")
    return str(root / "registry")


def baseline_app():
    """Plain uvicorn's app: the same FastAPI app and model, no Ray (registry in ``BENCH_SERVE_REGISTRY``).

    A factory, so that ``uvicorn --workers 2`` can build it in each of its worker processes.
    """
    from ingest.settings import ServeSettings
    from serve.api import create_api
    from serve.backend import DirectBackend
    from serve.metrics import ServeMetrics
    from serve.model import ModelServer

    settings = ServeSettings()
    server = ModelServer(os.environ["BENCH_SERVE_REGISTRY"], MODEL_NAME, settings)
    server.refresh()
    return create_api(DirectBackend(server, ServeMetrics(ray_metrics=False), settings))


def baseline_server(registry_dir: str, port: int, workers: int = 1) -> None:
    """Plain uvicorn on ``port``: one process, or ``workers`` processes sharing the port."""
    import uvicorn

    os.environ["BENCH_SERVE_REGISTRY"] = registry_dir
    uvicorn.run("bench.serve:baseline_app", factory=True, host="127.0.0.1", port=port, workers=workers,
                log_level="warning", access_log=False)


def wait_ready(port: int, timeout: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json().get("model_loaded"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="Serve replica counts to measure")
    parser.add_argument("--skip-batch", action="store_true", help="skip the /predict/batch levels")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                        help="deployment option override, e.g. logging_config='{\"enable_access_log\": false}'")
    parser.add_argument("--baseline-server", nargs=3, metavar=("REGISTRY", "PORT", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        baseline_server(args.baseline_server[0], int(args.baseline_server[1]), int(args.baseline_server[2]))
        return 0

    from actors.supervisor import STREAM_NODE_ENV
    from serve.deployment import SERVE_ENV

    # The Serve controller, the proxy and the raylet read these when Ray starts them: set before
    # ray.init, as `smoke up` sets them for its head.
    os.environ.update({**SERVE_ENV, **STREAM_NODE_ENV})
    # HAProxy's stats and metrics ports default to 8404 and 9101: another Serve with HAProxy on
    # this host (a running stack) would collide, so take free ones unless told otherwise.
    for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
        os.environ.setdefault(name, str(free_port()))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    registry_dir = train_model(work)
    print(f"bench serve: model trained in {time.monotonic() - began:.0f} s", flush=True)

    base_port, base2_port, serve_port = free_port(), free_port(), free_port()
    # One OpenMP thread for LightGBM, as Ray gives its workers (OMP_NUM_THREADS=1): with two
    # threads spinning on 2 shared cores the baseline measured 2.5x slower than it should.
    # The second baseline, `uvicorn --workers 2`, is what 2 Serve replicas are set beside too: the
    # plain alternative with as many processes.
    baselines = [subprocess.Popen([sys.executable, "-m", "bench.serve", "--baseline-server", registry_dir,
                                   str(port), str(workers)], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
                 for port, workers in ((base_port, 1), (base2_port, 2))]
    import ray
    from ray import serve

    from ingest.settings import ServeSettings
    from serve.app import build_app

    try:
        # address="local": always a fresh Ray of our own, never a cluster someone started with `ray start`.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="bench-serve")
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
        extra = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
        wait_ready(base_port)
        wait_ready(base2_port)
        one = orjson.dumps(READING)
        rows = [{**READING, "sensor_id": f"bench-{i % 500}", "TVOC": float(i % 3000)} for i in range(BATCH_ROWS)]
        batch = orjson.dumps({"data": rows})
        results: dict[str, Any] = {"predict": {}, "predict_batch": {}}
        for replicas in args.replicas:
            # Same application, redeployed in place with another replica count; every other option
            # as configs/serve.yaml ships it (what `serve deploy` and `smoke serve start` deploy).
            options = {"num_replicas": replicas, **extra}
            serve.run(build_app(ServeSettings(port=serve_port), registry_dir, MODEL_NAME, options),
                      name="bench", route_prefix="/", blocking=False)
            wait_ready(serve_port)
            print(f"bench serve: {replicas} replica(s) up at {time.monotonic() - began:.0f} s", flush=True)
            level: dict[str, Any] = {}
            for c in args.concurrency:
                plain = measure(base_port, "/predict", one, c, args.seconds)
                served = measure(serve_port, "/predict", one, c, args.seconds)
                ratio = (round(served["requests_per_s"] / plain["requests_per_s"], 3)
                         if plain["requests_per_s"] else None)
                level[f"c{c}"] = {"serve": served, "uvicorn": plain, "ratio_rps": ratio}
                print(f"/predict {replicas} replica(s) c={c}: serve {served['requests_per_s']} req/s "
                      f"p50 {served['p50_ms']} ms p99 {served['p99_ms']} ms | uvicorn {plain['requests_per_s']} "
                      f"req/s p50 {plain['p50_ms']} ms p99 {plain['p99_ms']} ms | ratio {ratio}", flush=True)
                if replicas == 2:
                    plain2 = measure(base2_port, "/predict", one, c, args.seconds)
                    ratio2 = (round(served["requests_per_s"] / plain2["requests_per_s"], 3)
                              if plain2["requests_per_s"] else None)
                    level[f"c{c}"] |= {"uvicorn_2_workers": plain2, "ratio_rps_2_workers": ratio2}
                    print(f"/predict {replicas} replica(s) c={c}: uvicorn --workers 2 {plain2['requests_per_s']} "
                          f"req/s p50 {plain2['p50_ms']} ms | ratio {ratio2}", flush=True)
            results["predict"][f"replicas_{replicas}"] = level
            if replicas != args.replicas[0] or args.skip_batch:
                continue
            for c in (1, 2):
                plain = measure(base_port, "/predict/batch", batch, c, args.seconds)
                served = measure(serve_port, "/predict/batch", batch, c, args.seconds)
                entry: dict[str, Any] = {}
                for name, m in (("serve", served), ("uvicorn", plain)):
                    entry[name] = {**m, "rows_per_s": round(m["requests_per_s"] * BATCH_ROWS)}
                entry["ratio_rows"] = (round(entry["serve"]["rows_per_s"] / entry["uvicorn"]["rows_per_s"], 3)
                                       if entry["uvicorn"]["rows_per_s"] else None)
                results["predict_batch"][f"c{c}"] = entry
                print(f"/predict/batch ({BATCH_ROWS} rows) {replicas} replica(s) c={c}: serve "
                      f"{entry['serve']['rows_per_s']:,} rows/s | uvicorn {entry['uvicorn']['rows_per_s']:,} "
                      f"rows/s | ratio {entry['ratio_rows']}", flush=True)
    finally:
        for baseline in baselines:
            baseline.terminate()
            baseline.wait(timeout=30)
        serve.shutdown()
        ray.shutdown()

    out = {
        "command": " ".join(["python -m bench.serve", *(argv if argv is not None else sys.argv[1:])]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {"serve": f"Ray Serve, {args.replicas} replicas, HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1 "
                           "RAY_SERVE_THROUGHPUT_OPTIMIZED=1), @serve.batch, deployment options of "
                           f"configs/serve.yaml{' with ' + ', '.join(args.option) if args.option else ''}",
                  "baseline": "uvicorn, one process, the same FastAPI app and model; beside 2 replicas also "
                              "uvicorn --workers 2",
                  "client": "asyncio keep-alive HTTP/1.1, same machine", "seconds_per_level": args.seconds,
                  "batch_rows": BATCH_ROWS, "cpus": os.cpu_count()},
        "predict": results["predict"],
        "predict_batch": results["predict_batch"],
        "ratio_rps": {r: {c: v["ratio_rps"] for c, v in level.items()} for r, level in results["predict"].items()},
        "ratio_rps_2_replicas_to_2_workers": {c: v["ratio_rps_2_workers"]
                                              for c, v in results["predict"].get("replicas_2", {}).items()},
        "batch_rows_per_s_serve": max((v["serve"]["rows_per_s"] for v in results["predict_batch"].values()),
                                      default=None),
        "total_seconds": round(time.monotonic() - began, 1),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"bench serve: wrote {RESULT.relative_to(ROOT)} in {out['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
