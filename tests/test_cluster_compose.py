"""The structure of docker-compose.yml and the files it references (no Docker engine needed).

Checks what would otherwise only fail on someone's first ``docker compose up``:
the services and their images, KRaft mode, healthchecks and start order,
ports published on loopback only, declared volumes, and that every file the
compose file, the Dockerfile and the mounted configs refer to exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from actors.supervisor import STREAM_NODE_ENV
from ingest.settings import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LONG_RUNNING = ("kafka", "ray-head", "ray-worker", "prometheus", "grafana")


def test_services():
    assert set(SERVICES) == {"kafka", "ray-head", "ray-worker", "stack-init", "simulator", "prometheus", "grafana"}
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus:")
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("ray-head", "ray-worker", "stack-init", "simulator"):
        assert SERVICES[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name


def test_kafka_runs_in_kraft_mode_without_zookeeper():
    env = SERVICES["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].endswith("@kafka:9093")
    assert not any("zookeeper" in key.lower() or "zookeeper" in str(v) for key, v in env.items())
    assert "zookeeper" not in SERVICES


def test_ray_nodes_carry_the_token_and_point_at_kafka():
    for name in ("ray-head", "ray-worker", "stack-init", "simulator"):
        env = SERVICES[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), "the token must be required, never defaulted"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    for name in ("ray-head", "ray-worker"):
        env = SERVICES[name]["environment"]
        assert {k: env.get(k) for k in STREAM_NODE_ENV} == STREAM_NODE_ENV, name
    head = SERVICES["ray-head"]["command"]
    assert "--head" in head and "--metrics-export-port=8080" in head and "--dashboard-port=8265" in head
    assert "--address=ray-head:6379" in SERVICES["ray-worker"]["command"]
    # Workers scale with `docker compose up --scale ray-worker=N`: no fixed name or host port.
    assert "container_name" not in SERVICES["ray-worker"] and "ports" not in SERVICES["ray-worker"]
    assert SERVICES["ray-worker"]["deploy"]["replicas"] >= 1
    assert all(SERVICES[name]["init"] is True for name in ("ray-head", "ray-worker"))
    assert SERVICES["ray-head"]["shm_size"] == "2gb"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_healthchecks(name: str):
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
    assert SERVICES[name]["restart"] == "unless-stopped"


def test_start_order():
    def needs(service: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in SERVICES[service].get("depends_on", {}).items()}

    assert needs("ray-head") == {"kafka": "service_healthy"}
    assert needs("ray-worker") == {"ray-head": "service_healthy"}
    assert needs("stack-init")["ray-head"] == "service_healthy" and needs("stack-init")["kafka"] == "service_healthy"
    assert needs("simulator")["stack-init"] == "service_completed_successfully"
    assert needs("prometheus") == {"ray-head": "service_healthy"}
    assert needs("grafana") == {"prometheus": "service_healthy"}
    for service in SERVICES:
        assert set(needs(service)) <= set(SERVICES)


def test_ports_are_published_on_loopback_only():
    published = [port for s in SERVICES.values() for port in s.get("ports", [])]
    assert published
    for port in published:
        assert port.startswith("127.0.0.1:"), port


def test_volumes_are_declared_and_bind_mounts_exist():
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO_ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_prometheus_shares_rays_temp_dir_and_grafana_its_provisioning():
    head_mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["ray-head"]["volumes"]}
    prom_mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["prometheus"]["volumes"]}
    assert head_mounts["/tmp/ray"] == prom_mounts["/tmp/ray"]
    prometheus = yaml.safe_load((REPO_ROOT / "configs" / "prometheus" / "prometheus.yml").read_text())
    sd_file = prometheus["scrape_configs"][0]["file_sd_configs"][0]["files"][0]
    assert sd_file.startswith("/tmp/ray/")
    for rule_file in prometheus["rule_files"]:
        assert (REPO_ROOT / "configs" / "prometheus" / rule_file).exists()
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    provider = yaml.safe_load((REPO_ROOT / "configs/grafana/provisioning/dashboards/smoke.yml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert grafana_mounts[dashboards_dir] == "./configs/grafana/dashboards"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO_ROOT / grafana_mounts[dashboards_dir] / Path(home).name).exists()


def test_every_file_the_dockerfile_copies_exists_and_is_not_ignored():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copied = [src for line in re.findall(r"^COPY (.+)$", dockerfile, flags=re.M) for src in line.split()[:-1]]
    assert copied
    for source in copied:
        assert (REPO_ROOT / source).exists(), source
        assert source not in ignored, f"{source} is copied but excluded by .dockerignore"
    assert "pip install -e ." in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, flags=re.M), "Ray must not run as root in the image"


def test_commands_run_real_smoke_subcommands():
    from cluster.cli import build_parser

    parser = build_parser()
    for name in ("stack-init", "simulator"):
        argv = SERVICES[name]["command"].split()
        assert argv[0] == "smoke"
        parser.parse_args(argv[1:])  # exits (fails the test) on an unknown command or flag
