"""The model registry: versions, metadata, loading, and the atomically switched production alias."""

from __future__ import annotations

import doctest
import threading

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import train.registry
from train.features import FEATURE_NAMES, POINT_FEATURES, LeakyFeatureError
from train.registry import ModelRegistry, PromotionRefused, RegistryError


def _data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(POINT_FEATURES)))
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return x, y


def _register(reg: ModelRegistry, pr_auc: float, fingerprint: str = "test-A", **extra) -> str:
    x, y = _data()
    model = LogisticRegression().fit(x, y)
    return reg.register(model, {"feature_names": list(POINT_FEATURES), "threshold": 0.3,
                                "metrics": {"pr_auc": pr_auc}, "test_fingerprint": fingerprint, **extra})


def test_docstring_example() -> None:
    result = doctest.testmod(train.registry)
    assert result.attempted > 0 and result.failed == 0


def test_register_load_lightgbm_roundtrip(tmp_path) -> None:
    x, y = _data()
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(x, y), 10)
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    reg = ModelRegistry(tmp_path / "reg", "m")
    version = reg.register(booster, {"feature_names": list(POINT_FEATURES), "threshold": 0.25},
                           artifacts={"report.md": report})
    assert version == "v0001" and reg.versions() == ["v0001"]
    meta = reg.metadata(version)
    assert meta["model_type"] == "lightgbm" and meta["feature_version"] >= 1
    assert meta["code_version"] and meta["created_at"] and meta["artifacts"] == ["report.md"]
    loaded = reg.load(version)
    assert loaded.threshold == 0.25 and loaded.feature_names == list(POINT_FEATURES)
    np.testing.assert_allclose(loaded.predict_proba(x), booster.predict(x))
    assert loaded.artifact("report.md").read_text() == "# report\n"
    # select() picks this model's columns out of the full feature matrix.
    full = np.arange(2 * len(FEATURE_NAMES), dtype=float).reshape(2, -1)
    np.testing.assert_array_equal(loaded.select(full), full[:, : len(POINT_FEATURES)])
    with pytest.raises(ValueError, match="expects shape"):
        loaded.predict_proba(full)


def test_clear_errors_for_missing_things(tmp_path) -> None:
    reg = ModelRegistry(tmp_path, "m")
    assert reg.production_version() is None and reg.versions() == []
    with pytest.raises(RegistryError, match="no production model"):
        reg.load()
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        reg.load("v0009")
    with pytest.raises(RegistryError, match="no earlier production"):
        reg.rollback()
    with pytest.raises(LeakyFeatureError, match="UTC"):
        reg.register(LogisticRegression(), {"feature_names": ["UTC", "temperature_c"], "threshold": 0.5})


def test_promote_refuses_worse_allows_force_and_rollback(tmp_path) -> None:
    reg = ModelRegistry(tmp_path, "m")
    v1 = _register(reg, 0.80)
    reg.promote(v1)  # nothing in production yet: allowed
    v2 = _register(reg, 0.70)
    with pytest.raises(PromotionRefused, match="does not beat"):
        reg.promote(v2)
    assert reg.production_version() == v1
    v3 = _register(reg, 0.90, fingerprint="test-B")  # measured on another test set: not comparable
    with pytest.raises(PromotionRefused, match="not measured on the same test set"):
        reg.promote(v3)
    # ... unless its run also measured production on its own test set.
    v4 = _register(reg, 0.90, fingerprint="test-B", compared_to={
        "version": v1, "test_fingerprint": "test-B", "metrics": {"pr_auc": 0.85}})
    reg.promote(v4)
    assert reg.production_version() == v4
    reg.promote(v2, force=True)
    assert reg.production_version() == v2
    assert reg.production_history() == [v1, v4]
    assert reg.rollback() == v4 and reg.production_version() == v4
    assert reg.rollback() == v1 and reg.production_version() == v1
    with pytest.raises(RegistryError):
        reg.rollback()
    assert reg.load().version == v1


def test_alias_switch_is_atomic_for_readers(tmp_path) -> None:
    """A poller never sees a missing or empty alias while promotions happen."""
    reg = ModelRegistry(tmp_path, "m")
    versions = [_register(reg, 0.5) for _ in range(2)]
    reg.promote(versions[0])
    seen: set[str | None] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.add(reg.production_version())

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for i in range(200):
            reg.promote(versions[i % 2], force=True)
    finally:
        stop.set()
        poller.join()
    assert seen <= set(versions) and None not in seen


def test_concurrent_registers_get_distinct_versions(tmp_path) -> None:
    reg = ModelRegistry(tmp_path, "m")
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(_register(reg, 0.5))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == ["v0001", "v0002", "v0003", "v0004"] == reg.versions()
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]


def test_windowed_model_is_not_promoted_without_force(tmp_path) -> None:
    reg = ModelRegistry(tmp_path, "m")
    names = list(FEATURE_NAMES)
    rng = np.random.default_rng(0)
    model = LogisticRegression().fit(rng.normal(size=(50, len(names))), np.arange(50) % 2)
    version = reg.register(model, {"feature_names": names, "threshold": 0.5, "metrics": {"pr_auc": 0.99}})
    with pytest.raises(PromotionRefused, match="windowed features"):
        reg.promote(version)
    assert reg.production_version() is None
    reg.promote(version, force=True)
    assert reg.production_version() == version
