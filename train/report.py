"""The evaluation report of one training run: PNG plots and a Markdown page, stored with the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and in Ray workers

import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from ingest.validation import format_timestamp

MAX_INCIDENT_ROWS = 30
PLOTS = ("pr_curve.png", "roc_curve.png", "feature_importance.png", "calibration.png")


def write_plots(
    out_dir: Path, y_test: np.ndarray, proba_test: np.ndarray, threshold: float,
    importance: dict[str, float] | None,
) -> dict[str, Path]:
    """PR and ROC curves, feature importance and calibration as PNG files in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    both = len(np.unique(y_test)) == 2

    fig, ax = plt.subplots(figsize=(5, 4))
    if both:
        precision, recall, _ = skm.precision_recall_curve(y_test, proba_test)
        ax.plot(recall, precision, label=f"AP={skm.average_precision_score(y_test, proba_test):.3f}")
        pred = proba_test >= threshold
        ax.scatter([skm.recall_score(y_test, pred)], [skm.precision_score(y_test, pred, zero_division=0)],
                   color="red", zorder=3, label=f"threshold {threshold:.3g}")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "test split has one class only", ha="center")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    paths["pr_curve.png"] = _save(fig, out_dir / "pr_curve.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    if both:
        fpr, tpr, _ = skm.roc_curve(y_test, proba_test)
        ax.plot(fpr, tpr, label=f"AUC={skm.roc_auc_score(y_test, proba_test):.3f}")
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "test split has one class only", ha="center")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    paths["roc_curve.png"] = _save(fig, out_dir / "roc_curve.png")

    fig, ax = plt.subplots(figsize=(6, 5))
    if importance:
        items = sorted(importance.items(), key=lambda kv: kv[1])[-20:]
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set(title="Feature importance (top 20)", xlabel="importance (normalised)")
    else:
        ax.text(0.5, 0.5, "model exposes no importance", ha="center")
    fig.tight_layout()
    paths["feature_importance.png"] = _save(fig, out_dir / "feature_importance.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    if both:
        frac_pos, mean_pred = calibration_curve(y_test, proba_test, n_bins=10, strategy="quantile")
        ax.plot(mean_pred, frac_pos, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="fraction of fires", title="Calibration (test)")
    ax.legend(loc="upper left")
    paths["calibration.png"] = _save(fig, out_dir / "calibration.png")
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_report(out_dir: Path, *, title: str, run: dict[str, Any], evaluation: dict[str, Any],
                 plots: dict[str, Path]) -> Path:
    """Markdown page next to the plots; numbers come from ``evaluation``, never typed by hand."""
    test, at_half = evaluation["test"], evaluation["test_at_0_5"]
    choice, ttd = evaluation["threshold_choice"], evaluation["time_to_detect"]
    cm = test["confusion_matrix"]
    lines = [
        f"# {title}", "",
        f"- model: `{run['model_type']}`, features: {len(run['feature_names'])} ({run['feature_set']})",
        f"- params: `{run['params']}`",
        f"- data: {run['data']['rows']} rows, {run['data']['sensors']} sensors, "
        f"fingerprint `{run['data']['fingerprint'][:16]}`",
        f"- split by time: train {run['split']['train_rows']} rows before "
        f"{format_timestamp(run['split']['train_end'])}, validation {run['split']['validation_rows']}, "
        f"test {run['split']['test_rows']} rows from {format_timestamp(run['split']['test_start'])}",
        "",
        "## Decision threshold",
        "",
        f"Chosen on the validation split for a target recall of {choice['target_recall']}: "
        f"threshold {choice['threshold']:.4g} (validation recall {choice['recall']:.4f}, "
        f"precision {choice['precision']:.4f}). Applied unchanged to test: recall {test['recall']:.4f}, "
        f"precision {test['precision']:.4f}"
        + (" — **below the target recall on test**." if test["recall"] < choice["target_recall"] else "."),
        "",
        "## Test metrics",
        "",
        "| metric | at chosen threshold | at 0.5 |",
        "| --- | --- | --- |",
    ]
    for key in ("precision", "recall", "f1", "accuracy", "roc_auc", "pr_auc"):
        lines.append(f"| {key} | {_fmt(test[key])} | {_fmt(at_half[key])} |")
    lines += [
        "",
        f"Confusion matrix at the chosen threshold ({test['rows']} rows, {test['positives']} labelled fire):",
        "",
        "| | predicted 0 | predicted 1 |",
        "| --- | --- | --- |",
        f"| label 0 | {cm['tn']} | {cm['fp']} |",
        f"| label 1 | {cm['fn']} | {cm['tp']} |",
        "",
        "## Time to detect (replayed test incidents)",
        "",
        f"{ttd['incidents']} label onsets in the test timeline; {ttd['detected']} detected, {ttd['missed']} missed. "
        f"Delay from onset to first positive prediction: median {_fmt(ttd['median_delay_s'])} s, "
        f"p90 {_fmt(ttd['p90_delay_s'])} s, max {_fmt(ttd['max_delay_s'])} s.",
        "",
    ]
    incidents = evaluation.get("incidents", [])
    if incidents:
        lines += ["| sensor | onset | end | delay s |", "| --- | --- | --- | --- |"]
        for incident in incidents[:MAX_INCIDENT_ROWS]:
            delay = "missed" if incident["delay_s"] is None else f"{incident['delay_s']:g}"
            lines.append(f"| {incident['sensor_id']} | {format_timestamp(incident['onset'])} | "
                         f"{format_timestamp(incident['end'])} | {delay} |")
        if len(incidents) > MAX_INCIDENT_ROWS:
            lines.append(f"| ... {len(incidents) - MAX_INCIDENT_ROWS} more | | | |")
        lines.append("")
    if run.get("sweep"):
        lines += ["## Sweep", "", "| trial | model | validation PR-AUC | time s |", "| --- | --- | --- | --- |"]
        for trial in run["sweep"]:
            lines.append(f"| {trial['trial']} | {trial['model']} | {_fmt(trial.get('val_pr_auc'))} | "
                         f"{_fmt(trial.get('time_s'))} |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
