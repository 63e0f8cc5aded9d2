"""Helpers shared by the Serve tests (real training, real Serve, real HTTP; nothing here is a fake).

A registry trained by the real pipeline, Serve started on a free port of the session's
``ray_cluster``, the application deployed from :func:`serve.app.build_app`, waiting on an
HTTP condition, and concurrent ``/predict`` load that records every request's outcome.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from ingest.settings import ServeSettings, load_settings

MODEL_NAME = "smoke-detector"

# The first row of the Kaggle data, under the seed API's names.
SEED = {"Temperature": 20.0, "Humidity": 57.36, "TVOC": 0.0, "eCO2": 400.0, "Raw H2": 12306.0,
        "Raw Ethanol": 18520.0, "Pressure": 939.735, "PM1.0": 0.0, "PM2.5": 0.0, "NC0.5": 0.0,
        "NC1.0": 0.0, "NC2.5": 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_registry(root: Path, versions: int = 1, model_name: str = MODEL_NAME) -> str:
    """A registry with ``versions`` models trained by the real pipeline (quick mode); the first is production."""
    from ingest.kaggle_generator import write_kaggle_csv
    from train.pipeline import train_and_register

    settings = load_settings(environ={})
    settings = settings.model_copy(update={"train": settings.train.model_copy(update={
        "registry_dir": str(root / "registry"), "model_name": model_name})})
    for k in range(versions):
        csv = root / f"kaggle-{k}.csv"
        write_kaggle_csv(csv, rows=4000, seed=k)
        train_and_register(settings, csv, quick=True, promote="auto" if k == 0 else "never")
    return str(root / "registry")


def start_serve(port: int) -> None:
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": port})


def deploy(registry_dir: str, serve_settings: ServeSettings, name: str = "smoke-test",
           model_name: str = MODEL_NAME, num_replicas: int = 1) -> None:
    from ray import serve

    from serve.app import build_app

    app = build_app(serve_settings, registry_dir, model_name,
                    {"num_replicas": num_replicas, "max_ongoing_requests": 64})
    serve.run(app, name=name, route_prefix="/", blocking=False)


def wait_for(url: str, predicate: Callable[[httpx.Response], bool], timeout: float = 60.0) -> httpx.Response:
    """GET ``url`` until ``predicate(response)`` holds; fails with the last answer after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=5)
            if predicate(r):
                return r
            last = r.text
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.3)
    raise AssertionError(f"{url} never satisfied the condition: {last}")


@dataclass(frozen=True)
class Outcome:
    """One /predict request of a load run (times are ``time.monotonic()``)."""

    started: float
    finished: float
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    model_version: str | None
    error: str | None  # the response text or the client error, for failures only
    attempt: int = 1  # 2: the one immediate retry of a failed request (``predict_load(retry_once=True)``)

    @property
    def ok(self) -> bool:
        return self.status == 200


async def predict_load(url: str, workers: int, stop: asyncio.Event, outcomes: list[Outcome],
                       timeout_s: float = 30.0, retry_once: bool = False) -> None:
    """``workers`` clients posting /predict back to back until ``stop`` is set; every request is recorded.

    Each client varies its ``sensor_id`` so the A/B split and batching see several sensors.
    ``retry_once`` re-sends a failed request once at once (recorded with ``attempt=2``): it tells
    whether a client that retries (``/predict`` is idempotent) would have seen the failure.
    """

    async def post(http: httpx.AsyncClient, body: dict, attempt: int) -> Outcome:
        started = time.monotonic()
        try:
            r = await http.post("/predict", json=body)
        except httpx.HTTPError as err:  # a connection error is a failed request too
            return Outcome(started, time.monotonic(), 0, None, repr(err), attempt)
        version = None
        if r.status_code == 200:
            version = r.json().get("model_version")
        return Outcome(started, time.monotonic(), r.status_code, version,
                       None if r.status_code == 200 else r.text[:200], attempt)

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as http:
            i = 0
            while not stop.is_set():
                i += 1
                body = {**SEED, "sensor_id": f"load-{k}-{i % 7}"}
                outcome = await post(http, body, 1)
                outcomes.append(outcome)
                if retry_once and not outcome.ok:
                    outcomes.append(await post(http, body, 2))

    await asyncio.gather(*(client(k) for k in range(workers)))
