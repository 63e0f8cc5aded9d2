"""Guarded retraining (cluster/guarded_retrain.py): a worse retrain never replaces production.

Real training, real registry, the guard window replayed through the real engine. A model
trained on shuffled labels is refused with its reasons recorded; a model trained on other
good recordings is promoted, and Serve's model watcher picks it up without a restart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cluster.cli import main as smoke
from cluster.guarded_retrain import guarded_retrain
from ingest.kaggle_generator import write_kaggle_csv
from ingest.schema import KAGGLE_LABEL
from ingest.settings import ServeSettings, load_settings
from serve.model import ModelServer
from train.registry import ModelRegistry


def test_a_worse_retrain_is_refused_and_a_good_one_promoted(tmp_path, monkeypatch, capsys):
    settings = load_settings(environ={})
    settings = settings.model_copy(update={"train": settings.train.model_copy(update={
        "registry_dir": str(tmp_path / "registry")})})
    first = write_kaggle_csv(tmp_path / "first.csv", rows=6_000, seed=1).path
    later = write_kaggle_csv(tmp_path / "later.csv", rows=6_000, seed=2).path
    guard = write_kaggle_csv(tmp_path / "guard.csv", rows=6_000, seed=3).path
    shuffled = pd.read_csv(later)
    shuffled[KAGGLE_LABEL] = np.random.default_rng(0).permutation(shuffled[KAGGLE_LABEL].to_numpy())
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    registry = ModelRegistry(settings.train.registry_dir, settings.train.model_name)

    assert guarded_retrain(settings, first, guard)["promoted"]  # no production yet
    server = ModelServer(settings.train.registry_dir, settings.train.model_name, ServeSettings())
    server.refresh()
    assert server.primary.model.version == "v0001"

    refused = guarded_retrain(settings, tmp_path / "shuffled.csv", guard)
    assert not refused["promoted"] and refused["candidate"] == "v0002"
    assert any("PR-AUC" in r for r in refused["reasons"]), refused
    assert registry.production_version() == "v0001"

    promoted = guarded_retrain(settings, later, guard)
    assert promoted["promoted"], promoted["reasons"]
    assert registry.production_version() == "v0003"
    server.refresh()  # what a replica's and a stream worker's ModelWatch do on their poll
    assert server.primary.model.version == "v0003"

    decisions = registry.decisions()
    assert [(d["candidate"], d["promoted"]) for d in decisions] == [("v0001", True), ("v0002", False),
                                                                      ("v0003", True)]
    assert decisions[1]["reasons"] == refused["reasons"] and decisions[1]["production_scores"]["pr_auc"] > 0.9
    monkeypatch.setenv("SMOKE_TRAIN__REGISTRY_DIR", settings.train.registry_dir)
    assert smoke(["models", "history"]) == 0
    out = capsys.readouterr().out
    assert "v0002" in out and "refused" in out and "PR-AUC" in out
