"""Versioned model registry on a filesystem, with an atomically switched ``production`` alias.

Layout::

    <root>/<name>/v0001/            one directory per registered version
        model.txt | model.pkl       LightGBM text model, or a pickled sklearn pipeline (train.models)
        metadata.json               features, params, metrics, data fingerprint, code version ...
        <artifacts>                 report.md, plots, drift reference
    <root>/<name>/production        the alias: one line naming the production version
    <root>/<name>/production.history  JSON list of earlier production versions (for rollback)

A version directory is written under a temporary name and renamed into place, so
readers never see half a version. The alias is replaced with ``os.replace`` (atomic
on POSIX), so a poller reading :meth:`ModelRegistry.production_version` sees the
old version or the new one, never an empty file.

>>> import tempfile, numpy as np
>>> from sklearn.dummy import DummyClassifier
>>> from train.features import POINT_FEATURES
>>> reg = ModelRegistry(tempfile.mkdtemp(), "demo")
>>> model = DummyClassifier(strategy="prior").fit(np.zeros((4, 15)), [0, 1, 1, 1])
>>> v = reg.register(model, {"feature_names": list(POINT_FEATURES), "threshold": 0.5,
...     "metrics": {"pr_auc": 0.7}, "test_fingerprint": "abc"})
>>> reg.promote(v); reg.production_version()
'v0001'
>>> reg.load().predict_proba(np.zeros((2, 15))).tolist()
[0.75, 0.75]
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from train.drift import FILE_NAME as DRIFT_FILE
from train.drift import DriftReference
from train.features import FEATURE_NAMES, FEATURE_VERSION, check_feature_names, needs_history
from train.models import load_model, predict_proba, save_model

PRODUCTION = "production"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
# The metric promotion compares when metadata does not name one; higher is better.
DEFAULT_PROMOTION_METRIC = "pr_auc"
REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["LoadedModel", "ModelRegistry", "PromotionRefused", "RegistryError", "code_version"]


DECISIONS_FILE = "retrain.decisions.jsonl"


class RegistryError(LookupError):
    """A version or alias that does not exist, or a registry that cannot be read."""


class PromotionRefused(RuntimeError):
    """The candidate does not beat production on the same test set (use force to override)."""


def code_version() -> str:
    """The git commit of the checkout (``+dirty`` when modified), else the package version."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "train", "ingest"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return f"git:{sha}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        try:
            return f"smoke-detect=={importlib_metadata.version('smoke-detect')}"
        except importlib_metadata.PackageNotFoundError:
            return "unknown"


class LoadedModel:
    """A registered model ready to predict: its version, metadata, feature columns and threshold."""

    def __init__(self, name: str, version: str, metadata: dict[str, Any], model: Any, directory: Path) -> None:
        self.name = name
        self.version = version
        self.metadata = metadata
        self.directory = directory
        self.feature_names: list[str] = check_feature_names(metadata["feature_names"])
        self.threshold: float = float(metadata["threshold"])
        self.model_type: str = metadata.get("model_type", "unknown")
        self._model = model
        self._columns = np.array([FEATURE_NAMES.index(n) for n in self.feature_names])

    def __repr__(self) -> str:
        return f"LoadedModel({self.name}:{self.version}, {self.model_type}, {len(self.feature_names)} features)"

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``(n, len(feature_names))`` -> ``(n,)`` probability of fire. NaN is allowed (missing history)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"model {self.name}:{self.version} expects shape (n, {len(self.feature_names)}) "
                             f"in the order of its feature_names, got {x.shape}")
        if len(x) == 0:
            return np.empty(0)
        return predict_proba(self._model, x)

    def select(self, all_features: np.ndarray) -> np.ndarray:
        """Columns in ``train.features.FEATURE_NAMES`` order -> this model's columns."""
        x = np.asarray(all_features)
        if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected shape (n, {len(FEATURE_NAMES)}) in FEATURE_NAMES order, got {x.shape}")
        return x[:, self._columns]

    def drift_reference(self) -> DriftReference:
        """The training-data feature distributions stored with this version (for PSI of recent data)."""
        return DriftReference.load(self.artifact(DRIFT_FILE))

    def artifact(self, name: str) -> Path:
        """Path of an artifact stored with this version (report.md, plots, drift reference)."""
        path = self.directory / name
        if not path.exists():
            raise RegistryError(f"{self.name}:{self.version} has no artifact {name!r}")
        return path


class ModelRegistry:
    """Registered versions of one model name under ``root`` and its ``production`` alias."""

    def __init__(self, root: str | Path, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
        self.root = Path(root)
        self.name = name
        self.directory = self.root / name
        self._alias = self.directory / PRODUCTION
        self._history = self.directory / f"{PRODUCTION}.history"

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r}, {self.name!r})"

    # -- writing -----------------------------------------------------------------------------

    def register(self, model: Any, metadata: dict[str, Any], artifacts: dict[str, Path] | None = None) -> str:
        """Store a model with its metadata and artifacts as the next version; returns it (``v0001`` ...).

        ``metadata`` must hold ``feature_names`` and ``threshold``; the registry adds
        ``created_at``, ``code_version``, ``feature_version``, ``model_type``, ``name``
        and ``version`` where they are missing.
        """
        for key in ("feature_names", "threshold"):
            if key not in metadata:
                raise ValueError(f"metadata needs {key!r}")
        check_feature_names(metadata["feature_names"])
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.directory))
        try:
            kind, model_file = save_model(model, staging)
            meta = {
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "code_version": code_version(),
                "feature_version": FEATURE_VERSION,
                "model_type": kind,
                **metadata,
                "model_file": model_file,
                "name": self.name,
                "artifacts": sorted((artifacts or {}).keys()),
            }
            for name, src in (artifacts or {}).items():
                if "/" in name or name in {"metadata.json", model_file}:
                    raise ValueError(f"artifact name {name!r} is not a plain file name or clashes")
                shutil.copyfile(src, staging / name)
            with self._lock():
                version = self._next_version()
                meta["version"] = version
                text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
                (staging / "metadata.json").write_text(text)
                os.rename(staging, self.directory / version)
            return version
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def promote(self, version: str, *, force: bool = False) -> None:
        """Point ``production`` at ``version``.

        Without ``force`` the candidate must use point features only (the HTTP API predicts
        from one reading) and beat the current production version on the promotion metric
        measured on the same test set (same test-data fingerprint), either as recorded by
        each version or as the candidate's run measured the production model
        (``metadata["compared_to"]``).
        """
        candidate = self.metadata(version)
        windowed = needs_history(candidate["feature_names"])
        if windowed and not force:
            # The HTTP API predicts from one reading: a production model that needs history breaks it.
            raise PromotionRefused(f"{version} uses windowed features ({', '.join(windowed[:3])} ...) that "
                                   "one HTTP reading cannot provide; production must use POINT_FEATURES "
                                   "(promote with force if only the stream uses this registry)")
        with self._lock():
            current = self.production_version()
            if current == version:
                return
            if current is not None and not force:
                self._check_beats(candidate, self.metadata(current))
            history = self._read_history()
            if current is not None:
                history.append(current)
            _atomic_write(self._history, json.dumps(history))
            _atomic_write(self._alias, version + "\n")

    def rollback(self) -> str:
        """Point ``production`` back at the version before it; returns that version."""
        with self._lock():
            history = self._read_history()
            if not history:
                raise RegistryError(f"{self.name}: no earlier production version to roll back to")
            previous = history.pop()
            self.metadata(previous)  # refuse a rollback to a version that has gone
            _atomic_write(self._alias, previous + "\n")
            _atomic_write(self._history, json.dumps(history))
            return previous

    # -- reading -----------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p.name for p in self.directory.iterdir()
                 if _VERSION_RE.match(p.name) and (p / "metadata.json").exists()]
        return sorted(found, key=lambda v: int(v[1:]))

    def metadata(self, version: str) -> dict[str, Any]:
        path = self.directory / version / "metadata.json"
        if not _VERSION_RE.match(version) or not path.exists():
            raise RegistryError(f"{self.name}: no version {version!r} in {self.directory} "
                                f"(have: {', '.join(self.versions()) or 'none'})")
        return json.loads(path.read_text())

    def production_version(self) -> str | None:
        """The version the alias names, or None; one small file read (cheap enough to poll)."""
        try:
            text = self._alias.read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def production_history(self) -> list[str]:
        return self._read_history()

    def resolve(self, ref: str = PRODUCTION) -> str:
        """A version or the alias -> a version; clear error when there is none."""
        if ref == PRODUCTION:
            version = self.production_version()
            if version is None:
                raise RegistryError(f"{self.name}: no production model in {self.directory} "
                                    "(train one with `smoke train --quick`, then `smoke models promote`)")
            return version
        self.metadata(ref)
        return ref

    def load(self, ref: str = PRODUCTION) -> LoadedModel:
        """Load a version (or the alias) for prediction; refuses models built on other feature definitions."""
        version = self.resolve(ref)
        meta = self.metadata(version)
        if meta.get("feature_version") != FEATURE_VERSION:
            raise RegistryError(f"{self.name}:{version} was trained on feature version {meta.get('feature_version')}, "
                                f"this code computes version {FEATURE_VERSION}: retrain it")
        directory = self.directory / version
        return LoadedModel(self.name, version, meta, load_model(directory / meta["model_file"]), directory)

    def record_decision(self, decision: dict[str, Any]) -> None:
        """Append a retraining decision (promoted or refused, and why) to ``retrain.decisions.jsonl``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(decision, sort_keys=True, default=_json_default)
        with self._lock(), open(self.directory / DECISIONS_FILE, "a") as out:
            out.write(line + "\n")

    def decisions(self) -> list[dict[str, Any]]:
        """Every recorded retraining decision, oldest first."""
        path = self.directory / DECISIONS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- internals ---------------------------------------------------------------------------

    def _check_beats(self, candidate: dict[str, Any], production: dict[str, Any]) -> None:
        metric = candidate.get("promotion_metric", DEFAULT_PROMOTION_METRIC)
        cand_score = candidate.get("metrics", {}).get(metric)
        if cand_score is None:
            raise PromotionRefused(f"{candidate['version']} records no {metric!r}: promote with force")
        prod_score = None
        fingerprint = candidate.get("test_fingerprint")
        if fingerprint is not None and production.get("test_fingerprint") == fingerprint:
            prod_score = production.get("metrics", {}).get(metric)
        compared = candidate.get("compared_to") or {}
        if prod_score is None and compared.get("version") == production["version"] \
                and compared.get("test_fingerprint") == fingerprint:
            prod_score = compared.get("metrics", {}).get(metric)
        if prod_score is None:
            raise PromotionRefused(
                f"{candidate['version']} and production {production['version']} were not measured on the same "
                f"test set, so {metric} cannot be compared: promote with force")
        if not cand_score > prod_score:
            raise PromotionRefused(f"{candidate['version']} {metric}={cand_score:.4f} does not beat production "
                                   f"{production['version']} {metric}={prod_score:.4f} on the same test set")

    def _next_version(self) -> str:
        existing = [int(p.name[1:]) for p in self.directory.iterdir() if _VERSION_RE.match(p.name)]
        return f"v{max(existing, default=0) + 1:04d}"

    def _read_history(self) -> list[str]:
        try:
            return list(json.loads(self._history.read_text()))
        except FileNotFoundError:
            return []

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Serialises writers (two trainers registering, a promote racing a rollback); readers need no lock.
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON")
