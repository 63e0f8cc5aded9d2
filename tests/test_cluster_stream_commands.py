"""Operating the stream: ``smoke stream start|status|scale|stop`` as separate processes against the
session's Ray cluster (address passed explicitly), and hot model reload while it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import ray
from sklearn.dummy import DummyClassifier

from actors.supervisor import StreamError, get_stream, start_stream
from tests.stream_support import produce, reading, wait_for
from train.features import POINT_FEATURES
from train.registry import ModelRegistry

pytestmark = pytest.mark.integration


def smoke(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_smoke_stream_commands_and_hot_model_reload(ray_cluster, settings) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    s = settings.model_copy(update={"stream": settings.stream.model_copy(update={"supervisor_name": name})})
    env = os.environ | {
        "SMOKE_KAFKA__TOPIC": s.kafka.topic, "SMOKE_KAFKA__ALERTS_TOPIC": s.kafka.alerts_topic,
        "SMOKE_KAFKA__DLQ_TOPIC": s.kafka.dlq_topic, "SMOKE_KAFKA__PARTITIONS": "4",
        "SMOKE_KAFKA__GROUP_ID": s.kafka.group_id, "SMOKE_STREAM__CHECKPOINT_DIR": s.stream.checkpoint_dir,
        "SMOKE_STREAM__LAKE_DIR": s.stream.lake_dir, "SMOKE_STREAM__MODEL_POLL_S": "0.5",
        "SMOKE_STREAM__CHECKPOINT_INTERVAL_S": "1", "SMOKE_TRAIN__REGISTRY_DIR": s.train.registry_dir,
        "KAFKA_BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
    }
    address = ray_cluster.address
    try:
        started = smoke(env, "stream", "start", "--address", address, "--name", name, "--workers", "2")
        assert started.returncode == 0, started.stderr[-2000:]
        assert get_stream(s) is not None
        with pytest.raises(StreamError, match="already running"):
            start_stream(s, s.kafka.bootstrap_servers)

        produce(s.kafka.bootstrap_servers, s.kafka.topic,
                [(f"cli-{i % 10}".encode(), reading(f"cli-{i % 10}", 1_780_000_000.0 + i, i)) for i in range(200)])

        # Hot reload: promote a model while the stream runs; workers pick it up without a restart.
        registry = ModelRegistry(s.train.registry_dir, s.train.model_name)
        model = DummyClassifier(strategy="prior").fit(np.zeros((4, len(POINT_FEATURES))), [0, 0, 0, 1])
        version = registry.register(model, {"feature_names": list(POINT_FEATURES), "threshold": 0.5,
                                            "metrics": {"pr_auc": 0.5}, "test_fingerprint": "cli-test"})
        registry.promote(version)

        def reloaded() -> dict | None:
            st = ray.get(get_stream(s).status.remote(), timeout=60)
            workers = st["workers"].values()
            done = sum(w["totals"]["processed"] for w in workers) == 200
            return st if done and all(w["model_version"] == version for w in workers) else None

        wait_for(reloaded, 60, interval_s=1, what=f"both workers on model {version} and 200 readings")
        out = smoke(env, "stream", "status", "--address", address, "--name", name, "--json")
        assert out.returncode == 0, out.stderr[-2000:]
        st = json.loads(out.stdout)
        assert sorted(int(p) for w in st["workers"].values() for p in w["partitions"]) == [0, 1, 2, 3]
        assert {w["model_version"] for w in st["workers"].values()} == {version}

        scaled = smoke(env, "stream", "scale", "3", "--address", address, "--name", name)
        assert scaled.returncode == 0, scaled.stderr[-2000:]
        assignment = ray.get(get_stream(s).assignment.remote())
        assert len(assignment) == 3
        assert sorted(len(a["partitions"]) for a in assignment.values()) == [1, 1, 2]

        stopped = smoke(env, "stream", "stop", "--address", address, "--name", name)
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        assert "stopped after checkpointing" in stopped.stdout
        wait_for(lambda: get_stream(s) is None, 30, what="the supervisor gone")
    finally:
        leftover = get_stream(s)
        if leftover is not None:
            ray.kill(leftover, no_restart=True)
