"""A Prometheus config for the local stack, derived from ``configs/prometheus/prometheus.yml``.

The shipped config reads Ray's service discovery file at ``/tmp/ray/...``, where
the Ray head of docker-compose writes it. ``smoke up`` runs Ray with its own temp
dir, so it writes ``<run_dir>/prometheus.yml`` with that file's real path (and
absolute rule files): ``prometheus --config.file=var/prometheus.yml`` then
scrapes the local stack with the same jobs and alert rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ingest.settings import REPO_ROOT

SHIPPED = REPO_ROOT / "configs" / "prometheus" / "prometheus.yml"
SD_FILE_NAME = "prom_metrics_service_discovery.json"


def local_config(service_discovery_file: Path, shipped: Path = SHIPPED) -> dict[str, Any]:
    config = yaml.safe_load(shipped.read_text())
    config["rule_files"] = [str((shipped.parent / rule).resolve()) for rule in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(service_discovery_file) if Path(f).name == SD_FILE_NAME else f for f in sd["files"]]
    return config


def write_local_config(run_dir: Path, service_discovery_file: Path) -> Path:
    path = run_dir / "prometheus.yml"
    header = f"# Written by `smoke up` from {SHIPPED.relative_to(REPO_ROOT)}; scrapes this stack's Ray.\n"
    path.write_text(header + yaml.safe_dump(local_config(service_discovery_file), sort_keys=False))
    return path
