"""Model lifecycle and protection on real Ray Serve over real HTTP: the ``smoke serve`` commands
with configs/serve.yaml, hot reload under concurrent load with zero failed requests, the A/B
split (proportions, stickiness, per-variant counts), shadow scoring, API keys and rate limits.

Two versions are trained once for the module by the real training code; v0001 is production.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from ingest.settings import ServeSettings, ServeVariant, load_settings
from tests.serve_support import (
    MODEL_NAME,
    SEED,
    Outcome,
    deploy,
    free_port,
    predict_load,
    start_serve,
    train_registry,
    wait_for,
)
from train.registry import ModelRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(ray_cluster, tmp_path_factory):
    from ray import serve

    registry_dir = train_registry(tmp_path_factory.mktemp("serve-life"), versions=2)
    port = free_port()
    start_serve(port)
    try:
        yield {"registry_dir": registry_dir, "port": port, "url": f"http://127.0.0.1:{port}",
               "address": ray_cluster.address}
    finally:
        serve.shutdown()


def smoke(*argv: str) -> tuple[int, str]:
    from cluster.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_no_model_yet_is_degraded_and_503_until_one_is_promoted(env, tmp_path):
    # A fresh model name: nothing registered. The replica starts anyway and says so.
    deploy(env["registry_dir"], ServeSettings(port=env["port"], reload_poll_s=0.5), model_name="late-model")
    url = env["url"]
    health = wait_for(url + "/health", lambda r: r.status_code == 200 and not r.json()["model_loaded"]).json()
    assert health["status"] == "degraded" and health["model_version"] is None
    assert "no production model" in health["variants"][0]["error"]
    for method, path in (("POST", "/predict"), ("GET", "/model/info"), ("POST", "/model/reload"),
                         ("GET", "/predict/sample")):
        r = httpx.request(method, url + path, json=SEED if path == "/predict" else None, timeout=30)
        assert r.status_code == 503, (path, r.text)
        assert "no model" in r.json()["error"] and int(r.headers["retry-after"]) >= 1
    batch = httpx.post(url + "/predict/batch", json=[SEED], timeout=30)
    assert batch.status_code == 503
    # The first model promoted is picked up by the poller: no redeploy, no restart.
    train_registry(Path(env["registry_dir"]).parent, model_name="late-model")
    health = wait_for(url + "/health", lambda r: r.json()["model_loaded"], timeout=30).json()
    assert health["status"] == "healthy" and health["model_version"] == "v0001"
    assert httpx.post(url + "/predict", json=SEED, timeout=30).status_code == 200
    from ray import serve

    serve.delete("smoke-test")  # free the route prefix for the next test's application


def test_cli_start_status_stop_with_serve_yaml(env, monkeypatch):
    # The same deployment options `serve deploy configs/serve.yaml` uses (autoscaling included).
    monkeypatch.setenv("SMOKE_SERVE__PORT", str(env["port"]))
    monkeypatch.setenv("SMOKE_SERVE__APP_NAME", "smoke-cli")
    monkeypatch.setenv("SMOKE_TRAIN__REGISTRY_DIR", env["registry_dir"])
    monkeypatch.setenv("SMOKE_TRAIN__MODEL_NAME", MODEL_NAME)
    code, out = smoke("serve", "start", "--address", env["address"])
    assert code == 0 and env["url"] in out
    health = wait_for(env["url"] + "/health", lambda r: r.status_code == 200).json()
    assert health["status"] == "healthy" and health["model_version"] == "v0001"
    code, out = smoke("serve", "status", "--address", env["address"], "--json")
    status = json.loads(out)
    assert code == 0 and status["status"] == "RUNNING"
    assert status["deployments"]["SmokeDetector"]["replicas"].get("RUNNING", 0) >= 1
    code, out = smoke("serve", "stop", "--address", env["address"])
    assert code == 0 and "stopped smoke-cli" in out
    code, out = smoke("serve", "status", "--address", env["address"])
    assert code == 3 and "NOT_DEPLOYED" in out


def test_serve_yaml_is_a_valid_serve_config_and_builds():
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from ingest.settings import REPO_ROOT
    from serve.app import BuilderArgs, app_builder

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text()))
    app_config = config.applications[0]
    assert app_config.import_path == "serve.app:app_builder"
    deployment = app_config.deployments[0]
    assert deployment.autoscaling_config["min_replicas"] >= 1
    assert deployment.autoscaling_config["max_replicas"] > deployment.autoscaling_config["min_replicas"]
    assert deployment.max_ongoing_requests >= ServeSettings().batch_max_size
    # `serve deploy` hands the builder the args as a plain dict.
    assert isinstance(app_builder(dict(app_config.args)), Application)
    assert isinstance(app_builder(BuilderArgs(**app_config.args)), Application)
    with pytest.raises(ValueError, match="unknown_key"):
        app_builder({"unknown_key": 1})
    from serve.app import build_app

    with pytest.raises(ValueError, match="max_ongoing_requests"):
        build_app(ServeSettings(batch_max_size=64), "/tmp", MODEL_NAME, {"max_ongoing_requests": 8})


def test_deployment_options_have_one_home_the_serve_config():
    from serve.app import SmokeDetector, build_app
    from serve.deployment import deployment_options

    # Nothing is set in the decorator: every option the app is deployed with is the config's.
    assert SmokeDetector._deployment_config.user_configured_option_names <= {"name"}
    shipped = deployment_options()
    built = build_app(ServeSettings(), "/tmp", MODEL_NAME)._bound_deployment
    assert built.max_ongoing_requests == shipped["max_ongoing_requests"]
    assert built._deployment_config.health_check_period_s == shipped["health_check_period_s"]
    assert built._deployment_config.autoscaling_config.max_replicas == shipped["autoscaling_config"]["max_replicas"]
    fixed = build_app(ServeSettings(), "/tmp", MODEL_NAME, {"num_replicas": 2})._bound_deployment
    assert fixed.num_replicas == 2 and fixed._deployment_config.autoscaling_config is None


def test_api_keys_from_environment_are_comma_separated():
    settings = load_settings(environ={"SMOKE_SERVE__API_KEYS": "alpha, beta"})
    assert settings.serve.api_keys == ["alpha", "beta"]


def test_hot_reload_under_load_has_zero_failed_requests(env, reliability_record):
    deploy(env["registry_dir"], ServeSettings(port=env["port"], reload_poll_s=0.5))
    wait_for(env["url"] + "/health", lambda r: r.status_code == 200 and r.json()["model_version"] == "v0001")
    registry = ModelRegistry(env["registry_dir"], MODEL_NAME)
    results: list[Outcome] = []

    async def scenario() -> int:
        stop = asyncio.Event()
        load = asyncio.create_task(predict_load(env["url"], 8, stop, results))
        await asyncio.sleep(1.5)
        promoted_at = len(results)
        registry.promote("v0002", force=True)  # what `smoke models promote v0002 --force` does
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(r.model_version == "v0002" for r in results[promoted_at:]):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # keep the load on after the switch
        stop.set()
        await load
        return promoted_at

    promoted_at = asyncio.run(scenario())
    failed = [(r.status, r.error) for r in results if not r.ok]
    assert not failed, f"{len(failed)} of {len(results)} requests failed during the reload: {failed[:5]}"
    versions = [r.model_version for r in results]
    assert "v0001" in versions[:promoted_at] and "v0002" in versions[promoted_at:]
    assert set(versions[-20:]) == {"v0002"}, "replica did not settle on the promoted version"
    assert len(results) > 100
    reliability_record("serve.hot_reload", clients=8, requests=len(results), failed=len(failed),
                       before_switch=versions.count("v0001"), after_switch=versions.count("v0002"))
    # The forced reload answers with the version now in production.
    assert httpx.post(env["url"] + "/model/reload").json()["model_version"] == "v0002"


def test_ab_split_proportions_stickiness_and_shadow(env):
    # Production is v0002 (promoted here too, so the test also runs alone); variant b pins
    # v0001 and the shadow scores v0001 as well.
    ModelRegistry(env["registry_dir"], MODEL_NAME).promote("v0002", force=True)
    variants = [ServeVariant(name="a", ref="production", weight=0.7), ServeVariant(name="b", ref="v0001", weight=0.3)]
    deploy(env["registry_dir"], ServeSettings(port=env["port"], variants=variants, shadow="v0001"))
    wait_for(env["url"] + "/health", lambda r: r.status_code == 200 and len(r.json()["variants"]) == 2)
    client = httpx.Client(base_url=env["url"], timeout=30)
    rows = [{**SEED, "sensor_id": f"sensor-{i}"} for i in range(4000)]
    first = client.post("/predict/batch", json=rows).json()["predictions"]
    assigned = {rows[p["index"]]["sensor_id"]: (p["variant"], p["model_version"]) for p in first}
    share_a = sum(v == "a" for v, _ in assigned.values()) / len(assigned)
    # Binomial sd at n=4000 is 0.007: 0.05 is a 7-sigma band.
    assert abs(share_a - 0.7) < 0.05, share_a
    assert {ver for v, ver in assigned.values() if v == "a"} == {"v0002"}
    assert {ver for v, ver in assigned.values() if v == "b"} == {"v0001"}
    # Sticky: the same sensors get the same variants again, in another order and one at a time.
    again = client.post("/predict/batch", json=rows[::-1]).json()["predictions"]
    assert all(assigned[rows[::-1][p["index"]]["sensor_id"]][0] == p["variant"] for p in again)
    for row in rows[:30]:
        assert client.post("/predict", json=row).json()["variant"] == assigned[row["sensor_id"]][0]
    stats = client.get("/predictions/stats").json()
    by_variant = stats["by_variant"]
    assert by_variant["a"]["model_version"] == "v0002" and by_variant["b"]["model_version"] == "v0001"
    assert by_variant["a"]["predictions"] + by_variant["b"]["predictions"] == 2 * 4000 + 30
    # The shadow scored every reading but never answered one.
    assert by_variant["shadow"]["predictions"] == 2 * 4000 + 30
    assert stats["shadow"]["compared"] == 2 * 4000 + 30 and 0.0 <= stats["shadow"]["agreement_rate"] <= 1.0
    assert all(p["variant"] in ("a", "b") for p in first)
    info = client.get("/model/info").json()
    assert info["shadow"]["model_version"] == "v0001" and [v["name"] for v in info["variants"]] == ["a", "b"]
    warnings = client.post("/validate", json=SEED).json()["warnings"]
    assert any("sensor_id" in w for w in warnings)


def test_api_keys_and_rate_limit(env):
    deploy(env["registry_dir"], ServeSettings(port=env["port"], api_keys=["key-one", "key-two"],
                                              rate_limit_per_minute=60, rate_limit_burst=5))
    url = env["url"]
    wait_for(url + "/predict/sample", lambda r: r.status_code == 401)
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").status_code == 200  # stays open for probes
        assert client.get("/openapi.json").status_code == 200
        missing = client.post("/predict", json=SEED)
        assert missing.status_code == 401 and "API key" in missing.json()["error"]
        assert "www-authenticate" in missing.headers
        wrong = client.post("/predict", json=SEED, headers={"X-API-Key": "key-three"})
        assert wrong.status_code == 403 and wrong.json()["error"]
        assert client.post("/predict", json=SEED, headers={"X-API-Key": "key-one"}).status_code == 200
        assert client.get("/model/info", headers={"Authorization": "Bearer key-one"}).status_code == 200
        # Burst of 5, one token a second: a quick run of 12 requests must hit 429 with Retry-After.
        codes = []
        retry_after = None
        for _ in range(12):
            r = client.post("/predict", json=SEED, headers={"X-API-Key": "key-two"})
            codes.append(r.status_code)
            if r.status_code == 429:
                retry_after = r.headers["retry-after"]
                assert "rate limit" in r.json()["error"]
        assert codes[:5] == [200] * 5 and 429 in codes, codes
        assert retry_after is not None and int(retry_after) >= 1
        # Limits are per key: key-one still has tokens.
        assert client.post("/predict", json=SEED, headers={"X-API-Key": "key-one"}).status_code == 200
        time.sleep(int(retry_after) + 0.2)
        assert client.post("/predict", json=SEED, headers={"X-API-Key": "key-two"}).status_code == 200


def test_rate_limit_without_auth_cannot_be_dodged_by_rotating_the_key_header(env):
    """With auth off the bucket is the client's address: a new X-API-Key per request changes nothing."""
    deploy(env["registry_dir"], ServeSettings(port=env["port"], rate_limit_per_minute=60, rate_limit_burst=3,
                                              max_body_bytes=12_345))
    url = env["url"]
    with httpx.Client(base_url=url, timeout=30) as client:
        # This deployment's own body limit tells when it (not the previous one) answers.
        deadline = time.monotonic() + 60
        while client.post("/validate", content=b" " * 12_346).status_code != 413:
            assert time.monotonic() < deadline, "the new deployment never answered"
            time.sleep(0.3)
        time.sleep(3.5)  # the tokens the probes above took come back
        codes = [client.post("/predict", json=SEED, headers={"X-API-Key": f"made-up-{i}",
                                                               "X-Forwarded-For": f"10.9.{i}.1"}).status_code
                 for i in range(10)]
    assert codes[:3] == [200] * 3 and codes.count(429) >= 5, codes
    time.sleep(3.5)
    with httpx.Client(base_url=url, timeout=30) as client:  # without the header: the connection's address
        codes = [client.post("/predict", json=SEED, headers={"X-API-Key": f"other-{i}"}).status_code
                 for i in range(6)]
    assert codes[:3] == [200] * 3 and codes.count(429) >= 2, codes


def test_rate_limit_buckets_are_bounded_and_keep_limiting_the_active_keys():
    from serve.rate_limit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0], max_keys=1_000)
    for i in range(5_000):
        limiter.acquire(f"addr:10.0.{i // 250}.{i % 250}")
    assert len(limiter) == 1_000
    # An active client keeps its (empty) bucket while others come and go.
    assert [limiter.acquire("key:k")[0] for _ in range(3)] == [True, True, False]
    for i in range(500):
        limiter.acquire(f"addr:192.168.0.{i}")
        assert limiter.acquire("key:k")[0] is False  # still refused: its bucket was not forgotten
    assert len(limiter) == 1_000


@pytest.mark.parametrize("module", ["serve.ab", "serve.rate_limit"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
