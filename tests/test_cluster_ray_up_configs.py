"""The ``ray up`` configs in ``cluster/`` validate against the installed Ray's autoscaler schema.

Both the file as written (``ray-schema.json``) and the config ``ray up`` would
use after filling in the provider's defaults (``prepare_config`` then
``validate_config``, the same calls ``ray up`` makes) are checked, and so is
what our deployment relies on: the package is installed on every node, token
auth is on, the dashboard stays on loopback and metrics are exported.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from ingest.settings import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "cluster").glob("*.yaml"))
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_there_is_an_onprem_and_a_cloud_config():
    providers = {yaml.safe_load(p.read_text())["provider"]["type"] for p in CONFIGS}
    assert {"local", "aws"} <= providers


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_against_rays_schema(path: Path):
    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, SCHEMA)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_installs_the_package_and_starts_ray_securely(path: Path):
    config = yaml.safe_load(path.read_text())
    setup = " ".join(config["setup_commands"])
    assert "-e ~/smoke-detect" in setup and "--python 3.11" in setup
    # The checkout is synced from the repository root, and the auth token with it.
    assert config["file_mounts"]["~/smoke-detect"] == "."
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head and "RAY_AUTH_MODE=token" in head
    assert "--dashboard-host=127.0.0.1" in head and "--dashboard-port=8265" in head
    assert "--metrics-export-port=8080" in head and "--autoscaling-config=" in head
    workers = " ".join(config["worker_start_ray_commands"])
    assert "--address=$RAY_HEAD_IP:6379" in workers and "RAY_AUTH_MODE=token" in workers
    assert "--metrics-export-port=8080" in workers
    # The environment `smoke up` gives its head: the Serve ingress flags there, the stream's on every node.
    from actors.supervisor import STREAM_NODE_ENV
    from serve.deployment import SERVE_ENV

    for name, value in {**SERVE_ENV, **STREAM_NODE_ENV}.items():
        assert f"{name}={value}" in head, name
    for name, value in STREAM_NODE_ENV.items():
        assert f"{name}={value}" in workers, name
    # Restarts stop only the session the previous start created, never every Ray of the user.
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert commands[0] == "~/venv/bin/python -m cluster.node_session stop"
        assert "cluster.node_session start -- ~/venv/bin/ray start" in commands[1]
        assert not any("ray stop" in command for command in commands)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_puts_the_alert_store_in_postgresql(path: Path):
    import re

    from alerting.database import normalize_dsn

    setup = " ".join(yaml.safe_load(path.read_text())["setup_commands"])
    (dsn,) = re.findall(r"export SMOKE_ALERTING__STORE_DSN=(\S+?)'", setup)
    url = normalize_dsn(dsn)
    assert url.get_backend_name() == "postgresql" and url.password is None  # the password is in ~/.pgpass


def test_a_broken_config_is_rejected():
    # The validation above must be able to fail: an unknown top-level key is a schema error.
    config = yaml.safe_load(CONFIGS[0].read_text())
    config["head_start_commands"] = ["typo"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, SCHEMA)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_gives_every_node_shared_paths_users_must_set(path: Path, tmp_path: Path):
    import shlex

    from cluster.shared_paths import PLACEHOLDER, SharedPathError, check

    config = yaml.safe_load(path.read_text())
    shared = [c for c in config["setup_commands"] if "cluster.shared_paths" in c]
    assert len(shared) == 1, "the setup commands of every node export the shared paths"
    words = shlex.split(shared[0])
    checkpoint, registry = words[words.index("--checkpoint-dir") + 1], words[words.index("--registry-dir") + 1]
    # No bucket or mount of ours: placeholders, refused with a clear error while they remain.
    assert PLACEHOLDER in checkpoint and PLACEHOLDER in registry
    with pytest.raises(SharedPathError, match="placeholder"):
        check(checkpoint, str(tmp_path))
    with pytest.raises(SharedPathError, match="placeholder"):
        check("s3://my-bucket/smoke", registry)
    with pytest.raises(SharedPathError, match="does not exist on this node"):
        check("s3://my-bucket/smoke", str(tmp_path / "not-mounted"))
    check("s3://my-bucket/smoke", str(tmp_path))  # what a user sets passes


def test_shared_paths_reach_the_login_shell_ray_starts_from(tmp_path: Path):
    import os
    import subprocess

    from cluster.shared_paths import install

    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("case $- in *i*) ;; *) return;; esac\n")
    install("s3://my-bucket/smoke/checkpoints", str(tmp_path), home=home)
    install("s3://my-bucket/smoke/checkpoints", str(tmp_path), home=home)  # a re-run of `ray up`
    assert (home / ".bashrc").read_text().count("smoke-detect shared paths") == 1
    # How Ray runs a start command: bash --login -c -i 'source ~/.bashrc; ...'.
    command = "source ~/.bashrc; echo $SMOKE_TRAIN__REGISTRY_DIR $SMOKE_STREAM__CHECKPOINT_DIR"
    out = subprocess.run(["bash", "-c", command],
                         env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(tmp_path), "s3://my-bucket/smoke/checkpoints"]
