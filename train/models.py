"""The model families of a sweep, built from one trial config each: LightGBM and two sklearn baselines.

A trial config is a plain dict (it travels through Ray Tune): ``{"model": kind, ...params}``.
Every family accepts NaN (no history yet, an undefined ratio): LightGBM and sklearn's
random forest natively, logistic regression through a median imputer with
missing-value indicators inside its pipeline; nothing is filled with zero.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

LIGHTGBM = "lightgbm"
RANDOM_FOREST = "random_forest"
LOGISTIC_REGRESSION = "logistic_regression"
MODEL_KINDS = (LIGHTGBM, RANDOM_FOREST, LOGISTIC_REGRESSION)

LIGHTGBM_KEYS = ("num_leaves", "learning_rate", "min_data_in_leaf", "feature_fraction", "num_boost_round",
                 "early_stopping_rounds")
LIGHTGBM_FILE = "model.txt"
PICKLE_FILE = "model.pkl"
# The quick path's config: 15 leaves scored best on validation among the sweep's LightGBM configs
# (bench/results/train.json); deeper trees overfit the earlier recording sessions.
DEFAULT_LIGHTGBM = {"model": LIGHTGBM, "num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 20,
                    "feature_fraction": 1.0, "num_boost_round": 200, "early_stopping_rounds": 20}


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Refuse an unknown model kind or LightGBM parameter here, not deep inside a Ray worker."""
    kind = config.get("model")
    if kind not in MODEL_KINDS:
        raise ValueError(f"trial config model must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    if kind == LIGHTGBM:
        unknown = set(config) - {"model", *LIGHTGBM_KEYS}
        if unknown:
            raise ValueError(f"unknown LightGBM trial parameters: {', '.join(sorted(unknown))}")
    return config


def lightgbm_params(config: dict[str, Any], num_threads: int = 1) -> dict[str, Any]:
    """LightGBM training parameters of a trial (booster rounds are separate: ``num_boost_round``)."""
    merged = {**DEFAULT_LIGHTGBM, **config}
    return {
        "objective": "binary",
        # Early stopping watches the log-loss (the first metric): on separable data the validation PR-AUC reaches
        # 1.0 after one tree and stopping on it kept that tree, whose probabilities sit near the base rate
        # (a clean-air reading scored 0.5). PR-AUC is still computed (the sweep reports it).
        "metric": ["binary_logloss", "average_precision"],
        "num_leaves": int(merged["num_leaves"]),
        "learning_rate": float(merged["learning_rate"]),
        "min_data_in_leaf": int(merged["min_data_in_leaf"]),
        "feature_fraction": float(merged["feature_fraction"]),
        # One thread per Ray CPU reserved: more would oversubscribe the cores other trials hold.
        "num_threads": num_threads,
        "seed": 0,
        "deterministic": True,
        "verbose": -1,
    }


def boosting_rounds(config: dict[str, Any]) -> tuple[int, int]:
    merged = {**DEFAULT_LIGHTGBM, **config}
    return int(merged["num_boost_round"]), int(merged["early_stopping_rounds"])


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """Compress heavy tails (particle counts span five orders of magnitude) for the linear baseline."""
    return np.sign(x) * np.log1p(np.abs(x))


def build_sklearn(config: dict[str, Any]) -> Pipeline:
    """The sklearn pipeline of a baseline trial."""
    kind = check_config(config)["model"]
    params = {k: v for k, v in config.items() if k != "model"}
    if kind == RANDOM_FOREST:
        model = RandomForestClassifier(n_estimators=int(params.get("n_estimators", 100)),
                                       max_depth=params.get("max_depth"),
                                       min_samples_leaf=int(params.get("min_samples_leaf", 1)),
                                       n_jobs=1, random_state=0)
        return Pipeline([("model", model)])  # sklearn >= 1.4 trees split on NaN natively
    if kind == LOGISTIC_REGRESSION:
        return Pipeline([
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            ("log", FunctionTransformer(signed_log1p)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(C=float(params.get("C", 1.0)), max_iter=1000)),
        ])
    raise ValueError(f"{kind} is not an sklearn baseline")


def fit_in_process(config: dict[str, Any], x_train: np.ndarray, y_train: np.ndarray,
                   x_val: np.ndarray, y_val: np.ndarray, num_threads: int = 1) -> Any:
    """Fit one trial config in this process (the quick path, baselines, and the bench baseline)."""
    check_config(config)
    if config["model"] == LIGHTGBM:
        rounds, patience = boosting_rounds(config)
        train_set = lgb.Dataset(x_train, y_train)
        return lgb.train(lightgbm_params(config, num_threads), train_set, rounds,
                         valid_sets=[lgb.Dataset(x_val, y_val, reference=train_set)], valid_names=["validation"],
                         callbacks=[lgb.early_stopping(patience, first_metric_only=True, verbose=False)])
    return build_sklearn(config).fit(x_train, y_train)


def predict_proba(model: Any, x: np.ndarray) -> np.ndarray:
    """Fire probability of each row, whatever the model family."""
    if isinstance(model, lgb.Booster):
        return np.asarray(model.predict(x, num_iteration=model.best_iteration or None), dtype=np.float64)
    return np.asarray(model.predict_proba(x))[:, 1]


def feature_importance(model: Any, feature_names: list[str]) -> dict[str, float] | None:
    """Importance normalised to sum 1: LightGBM gain, forest impurity, |standardised coefficient|."""
    if isinstance(model, lgb.Booster):
        raw = model.feature_importance(importance_type="gain")
    else:
        last = model[-1] if isinstance(model, Pipeline) else model
        if hasattr(last, "feature_importances_"):
            raw = last.feature_importances_
        elif hasattr(last, "coef_"):
            raw = np.abs(last.coef_[0][: len(feature_names)])  # indicator columns come after the features
        else:
            return None
    raw = np.asarray(raw, dtype=np.float64)
    total = raw.sum()
    if total <= 0:
        return None
    return {name: float(v / total) for name, v in zip(feature_names, raw, strict=True)}


def model_type(model: Any) -> str:
    if isinstance(model, lgb.Booster):
        return LIGHTGBM
    last = model[-1] if isinstance(model, Pipeline) else model
    return {RandomForestClassifier: RANDOM_FOREST, LogisticRegression: LOGISTIC_REGRESSION}.get(
        type(last), type(last).__name__)


def save_model(model: Any, directory: Path) -> tuple[str, str]:
    """Write a model into ``directory``; returns (model type, file name)."""
    if isinstance(model, lgb.Booster):
        model.save_model(str(directory / LIGHTGBM_FILE), num_iteration=model.best_iteration or None)
        return LIGHTGBM, LIGHTGBM_FILE
    if not hasattr(model, "predict_proba"):
        raise TypeError(f"cannot save a {type(model).__name__}: need a lightgbm.Booster or an "
                        "estimator with predict_proba")
    with open(directory / PICKLE_FILE, "wb") as handle:
        pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return model_type(model), PICKLE_FILE


def load_model(path: Path) -> Any:
    """Read a model written by :func:`save_model`."""
    if path.name == LIGHTGBM_FILE:
        return lgb.Booster(model_file=str(path))
    with open(path, "rb") as handle:
        # Only files our own trainer wrote are read here; never point this at untrusted files.
        return pickle.load(handle)
