"""Training benchmark: our Ray Tune sweep (LightGBM on Ray Train + sklearn baselines) beside sklearn GridSearchCV.

Both search the same grid on the same rows with the same single time-ordered
train/validation split (``PredefinedSplit``), scored by PR-AUC (average
precision) on validation; GridSearchCV runs in one process (``n_jobs=1``) and
does not refit. LightGBM trials run their full ``num_boost_round`` on both
sides (early-stopping patience = rounds) so both do the same boosting work.
Data: a generated Kaggle-format file of the real file's size (62,630 rows).
Prints the wall times, their ratio and the final model's test metrics, and
writes ``bench/results/train.json``.

    python -m bench.train                 # full grid (6 LightGBM + 3 baselines)
    python -m bench.train --rows 20000 --rounds 50
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import Pipeline

from ingest.kaggle_generator import write_kaggle_csv
from ingest.schema import LABEL
from ingest.settings import load_settings
from train.dataset import build_features, feature_matrix, load_source, split_by_time, validate_frame
from train.features import POINT_FEATURES
from train.models import LIGHTGBM, build_sklearn, lightgbm_params
from train.pipeline import train_and_register
from train.registry import ModelRegistry
from train.sweep import default_trials

RESULTS = Path(__file__).resolve().parent / "results"
KAGGLE_ROWS = 62_630


def grid_for_sklearn(trials: list[dict[str, Any]]) -> list[dict[str, list[Any]]]:
    """The same trial configs as GridSearchCV candidates: one single-point grid per trial."""
    grid = []
    for trial in trials:
        if trial["model"] == LIGHTGBM:
            params = lightgbm_params(trial, num_threads=1)
            estimator = lgb.LGBMClassifier(
                n_estimators=trial["num_boost_round"], num_leaves=params["num_leaves"],
                learning_rate=params["learning_rate"], min_child_samples=params["min_data_in_leaf"],
                colsample_bytree=params["feature_fraction"], n_jobs=1, random_state=0, verbose=-1)
        else:
            estimator = build_sklearn(trial)
        grid.append({"model": [estimator]})
    return grid


def run_grid_search(trials: list[dict[str, Any]], split) -> tuple[float, float, list[float]]:
    x = np.vstack([feature_matrix(split.train, list(POINT_FEATURES)),
                   feature_matrix(split.validation, list(POINT_FEATURES))])
    y = np.concatenate([split.train[LABEL].to_numpy(), split.validation[LABEL].to_numpy()])
    fold = np.r_[np.full(len(split.train), -1), np.zeros(len(split.validation), dtype=int)]
    search = GridSearchCV(Pipeline([("model", "passthrough")]), grid_for_sklearn(trials),
                          scoring="average_precision", cv=PredefinedSplit(fold), n_jobs=1, refit=False)
    started = time.monotonic()
    search.fit(x, y)
    scores = [float(v) for v in search.cv_results_["mean_test_score"]]
    return time.monotonic() - started, float(search.best_score_), scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=KAGGLE_ROWS)
    parser.add_argument("--rounds", type=int, default=100, help="boosting rounds of every LightGBM config")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import ray

    trials = [({**t, "early_stopping_rounds": args.rounds} if t["model"] == LIGHTGBM else t)
              for t in default_trials(rounds=args.rounds)]
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_kaggle_csv(Path(tmp) / "smoke.csv", rows=args.rows, seed=0).path
        base = load_settings(environ={})
        settings = base.model_copy(update={"train": base.train.model_copy(update={
            "registry_dir": str(Path(tmp) / "registry"), "num_workers": 2, "max_concurrent_trials": 1})})
        # address="local": always a fresh Ray of our own, never a cluster someone else started (a bare
        # ray.init() joins the latest cluster of /tmp/ray/ray_current_cluster or RAY_ADDRESS).
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            started = time.monotonic()
            version = train_and_register(settings, csv, quick=False, trials=trials, promote="never")
            ours_total = time.monotonic() - started
        finally:
            ray.shutdown()
        meta = ModelRegistry(settings.train.registry_dir, settings.train.model_name).metadata(version)

        readings, _ = validate_frame(load_source(csv))
        split = split_by_time(build_features(readings, engine="local"),
                              validation_fraction=settings.train.validation_fraction,
                              test_fraction=settings.train.test_fraction)
        baseline_s, baseline_best, baseline_scores = run_grid_search(trials, split)

    ours_s = meta["sweep_seconds"]
    result = {
        "rows": args.rows,
        "trials": len(trials),
        "lightgbm_rounds": args.rounds,
        "resources": {"cpus": os.cpu_count(), "train_workers_per_lightgbm_trial": 2, "max_concurrent_trials": 1},
        "ours": {"what": "Ray Tune sweep, LightGBM trials on Ray Train (2 workers), baselines as trials",
                 "sweep_s": ours_s, "end_to_end_s": round(ours_total, 2),
                 "best_val_pr_auc": max(t["val_pr_auc"] for t in meta["sweep"]), "best": meta["params"]},
        "baseline": {"what": "sklearn GridSearchCV, same grid and split, n_jobs=1, refit=False",
                     "search_s": round(baseline_s, 2), "best_val_pr_auc": baseline_best},
        "per_trial_val_pr_auc": [{"config": t["config"], "ours": t["val_pr_auc"], "grid_search_cv": b}
                                 for t, b in zip(meta["sweep"], baseline_scores, strict=True)],
        "ratio_ours_over_baseline": round(ours_s / baseline_s, 2),
        "final_model": {"model_type": meta["model_type"], "threshold": meta["threshold"],
                        "test": meta["metrics"], "trials": meta["sweep"]},
        "command": "python -m bench.train" + (f" --rows {args.rows}" if args.rows != KAGGLE_ROWS else "")
                   + (f" --rounds {args.rounds}" if args.rounds != 100 else ""),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train.json").write_text(json.dumps(result, indent=2, default=str))
    m = meta["metrics"]
    print(f"\nsweep of {len(trials)} trials on {args.rows} rows: ours {ours_s:.1f} s "
          f"(end to end incl. features, evaluation, report {ours_total:.1f} s), "
          f"GridSearchCV {baseline_s:.1f} s, ratio ours/baseline {result['ratio_ours_over_baseline']:.2f}")
    for row in result["per_trial_val_pr_auc"]:
        print(f"  {row['config']}: validation PR-AUC ours {row['ours']:.4f}, GridSearchCV {row['grid_search_cv']:.4f}")
    print(f"best validation PR-AUC: ours {result['ours']['best_val_pr_auc']:.4f}, GridSearchCV {baseline_best:.4f}")
    print(f"final model {meta['model_type']} {meta['params']}: test PR-AUC {m['pr_auc']:.4f} ROC-AUC "
          f"{m['roc_auc']:.4f} precision {m['precision']:.4f} recall {m['recall']:.4f} F1 {m['f1']:.4f} at "
          f"threshold {meta['threshold']:.4g}; median time to detect {m['median_time_to_detect_s']} s, "
          f"{m['incidents_missed']}/{m['incidents']} incidents missed")
    print(f"wrote {RESULTS / 'train.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
