"""End to end on a real Ray cluster: Ray Data features, Tune sweep with Ray Train workers, report, registry, CLI."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from cluster.cli import main as smoke
from ingest.kaggle_generator import write_kaggle_csv
from ingest.settings import Settings, load_settings
from train.features import FEATURE_NAMES, POINT_FEATURES
from train.pipeline import train_and_register
from train.registry import ModelRegistry
from train.report import PLOTS

pytestmark = pytest.mark.integration

# Tiny on purpose: two LightGBM configs (each a 2-worker Ray Train run) and both baselines.
TRIALS = [
    {"model": "lightgbm", "num_leaves": 7, "learning_rate": 0.2, "num_boost_round": 15, "early_stopping_rounds": 5},
    {"model": "lightgbm", "num_leaves": 15, "learning_rate": 0.1, "num_boost_round": 15, "early_stopping_rounds": 5},
    {"model": "random_forest", "n_estimators": 20, "max_depth": 8},
    {"model": "logistic_regression", "C": 1.0},
]


@pytest.fixture(scope="module")
def kaggle_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "smoke.csv"
    # 30 short sessions so the later 20% of the timeline holds label onsets (time-to-detect).
    return write_kaggle_csv(path, rows=6000, seed=11, bad_rows=4).path


@pytest.fixture
def train_settings(tmp_path) -> Settings:
    base = load_settings(environ={})
    return base.model_copy(update={"train": base.train.model_copy(update={
        "registry_dir": str(tmp_path / "registry"), "num_workers": 2, "max_concurrent_trials": 1})})


def test_sweep_with_two_workers_registers_model_with_report(ray_cluster, kaggle_csv, train_settings, caplog) -> None:
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    version = train_and_register(train_settings, kaggle_csv, quick=False, trials=TRIALS)
    elapsed = time.monotonic() - started
    registry = ModelRegistry(train_settings.train.registry_dir, train_settings.train.model_name)
    assert registry.versions() == [version] and registry.production_version() == version  # first model
    meta = registry.metadata(version)
    # Every trial ran to completion and is recorded; progress was logged per trial.
    assert [t["model"] for t in meta["sweep"]] == [t["model"] for t in TRIALS]
    assert all(t["error"] is None and 0 < t["val_pr_auc"] <= 1 for t in meta["sweep"])
    assert sum("sweep: trial" in r.getMessage() for r in caplog.records) == len(TRIALS)
    best = max(meta["sweep"], key=lambda t: t["val_pr_auc"])
    assert meta["params"] == best["config"]
    # Honest split and no leaks: the model sees point features only, never UTC/CNT.
    assert meta["feature_names"] == list(POINT_FEATURES)
    assert meta["split"]["train_end"] <= meta["split"]["test_start"]
    assert meta["data"]["rejected_by_reason"] and sum(meta["data"]["rejected_by_reason"].values()) >= 4
    for key in ("precision", "recall", "f1", "roc_auc", "pr_auc", "accuracy"):
        assert 0 <= meta["metrics"][key] <= 1, key
    assert meta["evaluation"]["test"]["confusion_matrix"]["tp"] > 0
    assert meta["evaluation"]["threshold_choice"]["target_recall"] == 0.99
    assert meta["evaluation"]["time_to_detect"]["incidents"] >= 1
    # The report and its plots are stored with the version.
    loaded = registry.load(version)
    report = loaded.artifact("report.md").read_text()
    assert "## Time to detect" in report and "Confusion matrix" in report
    for plot in PLOTS:
        assert loaded.artifact(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        assert f"]({plot})" in report
    drift = loaded.drift_reference()
    assert drift.feature_names == list(POINT_FEATURES)
    psi = drift.psi(loaded.select(np.full((50, len(FEATURE_NAMES)), 1.0)))
    assert set(psi) == set(POINT_FEATURES) and all(v > 0.25 for v in psi.values())  # constant input: drifted
    proba = loaded.predict_proba(np.zeros((3, len(POINT_FEATURES))))
    assert proba.shape == (3,) and np.isfinite(proba).all()
    logging.getLogger(__name__).info("sweep of %d trials end to end: %.1f s", len(TRIALS), elapsed)


def test_quick_run_compares_with_production_and_cli_moves_alias(kaggle_csv, train_settings, monkeypatch,
                                                                capsys) -> None:
    first = train_and_register(train_settings, kaggle_csv, quick=True)
    windowed = train_and_register(train_settings, kaggle_csv, quick=True, feature_set="all")
    same = train_and_register(train_settings, kaggle_csv, quick=True)  # deterministic: equal, not better
    registry = ModelRegistry(train_settings.train.registry_dir, train_settings.train.model_name)
    meta = registry.metadata(windowed)
    # Each run measured production on its own test set: promotion compares like with like.
    assert meta["compared_to"]["version"] == first
    assert meta["compared_to"]["test_fingerprint"] == meta["test_fingerprint"]
    assert meta["feature_set"] == "all" and len(meta["feature_names"]) > len(POINT_FEATURES)
    # "auto" promoted neither: the windowed model cannot serve one HTTP reading, the other is not better.
    assert registry.production_version() == first
    # Through the CLI: list, refused promotions, force, rollback, show.
    monkeypatch.setenv("SMOKE_TRAIN__REGISTRY_DIR", train_settings.train.registry_dir)
    assert smoke(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["production"]) for r in listed] == [(first, True), (windowed, False), (same, False)]
    assert smoke(["models", "promote", same]) == 1
    assert smoke(["models", "promote", windowed]) == 1
    assert registry.production_version() == first
    assert smoke(["models", "promote", same, "--force"]) == 0
    assert registry.production_version() == same
    assert smoke(["models", "rollback"]) == 0
    assert registry.production_version() == first
    capsys.readouterr()
    assert smoke(["models", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == first


def test_sweep_that_cannot_fit_the_cluster_is_refused_up_front(ray_cluster, kaggle_csv, train_settings) -> None:
    """An oversubscribed trainer would hang forever (WorkerGroupStartupTimeoutError): refuse it instead."""
    from train.distributed import ResourcesError

    too_many = train_settings.model_copy(update={"train": train_settings.train.model_copy(update={
        "num_workers": 3, "max_concurrent_trials": 2})})
    started = time.monotonic()
    with pytest.raises(ResourcesError, match="needs 6 CPUs but the Ray cluster has 4"):
        train_and_register(too_many, kaggle_csv, quick=False, trials=TRIALS[:1], engine="local")
    assert time.monotonic() - started < 5  # refused before reading the data


def test_smoke_train_quick_and_one_line_failure(kaggle_csv, tmp_path, monkeypatch, capsys, caplog) -> None:
    from cluster.cli import main

    monkeypatch.setenv("SMOKE_TRAIN__REGISTRY_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("SMOKE_RAY__RUN_DIR", str(tmp_path / "var"))  # no running stack to attach to
    assert main(["train", "--quick", "--source", str(kaggle_csv)]) == 0
    assert capsys.readouterr().out.strip() == "v0001"
    caplog.clear()
    assert main(["train", "--quick", "--source", str(tmp_path / "missing.csv")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "missing.csv does not exist" in errors[0]
