"""Detection measured on recordings: a Kaggle-format file's sessions replayed through the stream's engine.

``smoke evaluate --source FILE`` runs this on any file in the Kaggle format: the
real recordings when the user has them, a generated file otherwise (the report
says which file it measured; only a real file measures the real sensors).

The file is cut into its recording sessions at gaps in ``UTC`` (more than
``MAX_GAP_S``). Each session is replayed as one sensor, in time order, at its
recorded pace in simulated time (arrival = event time, the engine's clock is the
replay's), through a fresh :class:`actors.detection.DetectionEngine` exactly as a
partition worker runs it (the sessions side by side, as a worker's sensors): the
shared features, the rule-based detectors, the production model and fusion. Then, per session and overall:

- **time to detect**: for every ignition (the first row of a run of
  ``Fire Alarm = 1``), the time to the first ``fire`` alert raised during that
  run; a run without one is a **missed** alarm;
- **false alerts**: ``fire`` alerts raised on a reading labelled 0, per
  sensor-hour of label-0 time.

Beside it, the model alone on the file's time split (the latest
``train.test_fraction`` of the timeline, never random rows; ``UTC`` and ``CNT``
are never features), at the model's own threshold.

>>> import numpy as np
>>> [(s.start, s.stop) for s in session_slices(np.array([0.0, 1.0, 2.0, 500.0, 501.0]))]
[(0, 3), (3, 5)]
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actors.detection import DetectionEngine
from ingest.alert_message import FIRE, RAISED
from ingest.schema import LABEL, MEASUREMENTS, SENSOR_ID, TIMESTAMP
from ingest.settings import Settings
from train.dataset import build_features, feature_matrix, load_source, split_by_time, validate_frame
from train.evaluate import classification_metrics

# A pause in UTC longer than this starts a new recording session (the kit reports every second).
MAX_GAP_S = 60.0
# Simulated seconds of readings handed to the engine per call (a worker polls about this often).
POLL_S = 10.0


@dataclass(frozen=True)
class Ignition:
    """One run of ``Fire Alarm = 1`` in a session and what the engine made of it."""

    onset: float  # UTC of its first labelled row
    run_s: float  # how long the label stays 1
    delay_s: float | None  # to the first fire alert raised during the run; None: missed


@dataclass
class SessionResult:
    index: int
    first_utc: float
    rows: int
    hours: float
    fire_rows: int
    quiet_hours: float  # label-0 time
    ignitions: list[Ignition] = field(default_factory=list)
    false_alerts: int = 0  # fire alerts raised on a label-0 reading

    @property
    def missed(self) -> int:
        return sum(1 for i in self.ignitions if i.delay_s is None)

    @property
    def first_delay_s(self) -> float | None:
        """Time from the session's first ``Fire Alarm = 1`` to its first fire alert (None: none, or missed)."""
        return self.ignitions[0].delay_s if self.ignitions else None


@dataclass
class RecordingEvaluation:
    source: str
    model_version: str | None
    model_trained_on: str | None
    sessions: list[SessionResult]
    model_metrics: dict[str, Any] | None  # the model alone on the file's test split

    @property
    def ignitions(self) -> list[Ignition]:
        return [i for s in self.sessions for i in s.ignitions]

    def overall(self) -> dict[str, Any]:
        delays = [i.delay_s for i in self.ignitions if i.delay_s is not None]
        quiet_hours = sum(s.quiet_hours for s in self.sessions)
        false_alerts = sum(s.false_alerts for s in self.sessions)
        return {
            "sessions": len(self.sessions), "rows": sum(s.rows for s in self.sessions),
            "hours": sum(s.hours for s in self.sessions), "ignitions": len(self.ignitions),
            "detected": len(delays), "missed": len(self.ignitions) - len(delays),
            "median_delay_s": float(np.median(delays)) if delays else None,
            "max_delay_s": float(max(delays)) if delays else None,
            "false_alerts": false_alerts, "quiet_sensor_hours": quiet_hours,
            "false_alerts_per_sensor_hour": false_alerts / quiet_hours if quiet_hours > 0 else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "model_version": self.model_version,
                "model_trained_on": self.model_trained_on, "overall": self.overall(),
                "sessions": [{**asdict(s), "missed": s.missed, "first_delay_s": s.first_delay_s}
                             for s in self.sessions],
                "model_metrics": self.model_metrics}

    def table(self) -> str:
        """The per-session table (Markdown)."""
        lines = ["| session | start (UTC) | hours | fire rows | ignitions | first delay s | missed | "
                 "false alerts | false / sensor-hour |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in self.sessions:
            rate = s.false_alerts / s.quiet_hours if s.quiet_hours > 0 else math.nan
            lines.append(f"| {s.index} | {int(s.first_utc)} | {s.hours:.2f} | {s.fire_rows} | {len(s.ignitions)} | "
                         f"{_num(s.first_delay_s)} | {s.missed} | {s.false_alerts} | {_num(rate, 3)} |")
        o = self.overall()
        lines.append(f"| all | | {o['hours']:.2f} | {sum(s.fire_rows for s in self.sessions)} | {o['ignitions']} | "
                     f"median {_num(o['median_delay_s'])} | {o['missed']} | {o['false_alerts']} | "
                     f"{_num(o['false_alerts_per_sensor_hour'], 3)} |")
        return "\n".join(lines)


def session_slices(timestamps: np.ndarray, max_gap_s: float = MAX_GAP_S) -> list[slice]:
    """Row ranges of the recording sessions of a time-ordered file: a new one after each gap > ``max_gap_s``."""
    t = np.asarray(timestamps, dtype=np.float64)
    if not len(t):
        return []
    cuts = np.flatnonzero(np.diff(t) > max_gap_s) + 1
    bounds = [0, *cuts.tolist(), len(t)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def replay_sessions(settings: Settings, model: Any | None, sessions: list[tuple[np.ndarray, np.ndarray]]
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sessions ``(timestamps, values)`` through one fresh engine, each as its own sensor, at recorded pace.

    All sessions start together in simulated time (session k as sensor ``session-k``, its
    times shifted by its start), so the engine's steps run across them as across a
    worker's sensors. Returns, per session, the event times (in the file's ``UTC``) of
    its raised fire alerts, and the model's probability of each reading (NaN without a model).
    """
    now = {"t": 0.0}
    engine = DetectionEngine(settings.detection, model, clock=lambda: now["t"])
    sensor = np.concatenate([np.full(len(t), k) for k, (t, _) in enumerate(sessions)]).astype(np.int64)
    local = np.concatenate([t - t[0] for t, _ in sessions])
    row_in = np.concatenate([np.arange(len(t)) for t, _ in sessions])
    values = np.vstack([v for _, v in sessions])
    order = np.lexsort((sensor, local))
    names = [f"session-{k}" for k in range(len(sessions))]
    raised: list[list[float]] = [[] for _ in sessions]
    proba = [np.full(len(t), np.nan) for t, _ in sessions]
    starts = [float(t[0]) for t, _ in sessions]
    bounds = np.searchsorted(local[order], np.arange(0.0, local.max() + POLL_S + 1, POLL_S), side="left")
    for a, b in itertools.pairwise(bounds.tolist()):
        if a == b:
            continue
        rows = order[a:b]
        t = local[rows]
        now["t"] = float(t[-1])
        ids = [names[k] for k in sensor[rows].tolist()]
        features, alerts = engine.process(ids, t, values[rows], t)
        alerts += engine.tick(now["t"])
        for alert in alerts:
            if alert.kind == FIRE and alert.state == RAISED:
                k = names.index(alert.sensor_id)
                raised[k].append(alert.event_time + starts[k])
        if model is not None:
            p = model.predict_proba(model.select(features))
            for k in np.unique(sensor[rows]).tolist():
                mine = sensor[rows] == k
                proba[k][row_in[rows][mine]] = p[mine]
    return [np.array(sorted(r)) for r in raised], proba


def evaluate_recording(settings: Settings, source: str | Path, model: Any | None) -> tuple[
        RecordingEvaluation, list[dict[str, np.ndarray]]]:
    """Replay every session of ``source`` and measure (see the module docs); also each session's timeline."""
    readings, _ = validate_frame(load_source(source))
    readings = readings.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    t_all = readings[TIMESTAMP].to_numpy(dtype=np.float64)
    values_all = readings[list(MEASUREMENTS)].to_numpy(dtype=np.float64)
    labels_all = readings[LABEL].to_numpy(dtype=np.int64)
    slices = session_slices(t_all)
    raised, proba = replay_sessions(settings, model, [(t_all[r], values_all[r]) for r in slices])
    sessions = [_score_session(k, t_all[r], labels_all[r], raised[k]) for k, r in enumerate(slices)]
    timelines = [{"t": t_all[r], "label": labels_all[r], "proba": proba[k], "raised": raised[k]}
                 for k, r in enumerate(slices)]
    trained_on = None
    if model is not None and getattr(model, "metadata", None):
        trained_on = model.metadata.get("data", {}).get("source")
    evaluation = RecordingEvaluation(str(source), None if model is None else str(model.version), trained_on,
                                     sessions, _model_on_time_split(settings, readings, model))
    return evaluation, timelines


def _score_session(index: int, t: np.ndarray, labels: np.ndarray, raised: np.ndarray) -> SessionResult:
    step = np.diff(t, append=t[-1] + 1.0) if len(t) else np.zeros(0)
    step = np.clip(step, 0.0, MAX_GAP_S)  # each reading stands for the time to the next (the last: 1 s)
    result = SessionResult(index, float(t[0]), len(t), float(step.sum()) / 3600.0, int(labels.sum()),
                           float(step[labels == 0].sum()) / 3600.0)
    starts = np.flatnonzero((labels == 1) & np.r_[True, labels[:-1] == 0])
    for a in starts.tolist():
        rest = np.flatnonzero(labels[a:] == 0)
        b = a + int(rest[0]) if len(rest) else len(labels)  # end of the run (exclusive)
        end = t[b] if b < len(t) else t[-1] + 1.0
        hits = raised[(raised >= t[a]) & (raised < end)]
        result.ignitions.append(Ignition(float(t[a]), float(end - t[a]),
                                         float(hits[0] - t[a]) if len(hits) else None))
    label_at = np.searchsorted(t, raised, side="right") - 1  # the reading that raised each alert
    result.false_alerts = int(np.sum(labels[np.clip(label_at, 0, len(labels) - 1)] == 0)) if len(raised) else 0
    return result


def _model_on_time_split(settings: Settings, readings: pd.DataFrame, model: Any | None) -> dict[str, Any] | None:
    """The model alone on the latest part of the file's timeline, at its own threshold."""
    if model is None:
        return None
    features = build_features(readings, engine="local")
    split = split_by_time(features, validation_fraction=settings.train.validation_fraction,
                          test_fraction=settings.train.test_fraction)
    proba = model.predict_proba(feature_matrix(split.test, list(model.feature_names)))
    metrics = classification_metrics(split.test[LABEL].to_numpy(), proba, model.threshold)
    return {**metrics, "test_start": split.test_start, "sensors": int(split.test[SENSOR_ID].nunique())}


def write_recording_report(evaluation: RecordingEvaluation, timelines: list[dict[str, np.ndarray]],
                           out_dir: Path, max_plots: int = 12) -> Path:
    """``report.md``, ``evaluation.json`` and one timeline PNG per session (up to ``max_plots``) in ``out_dir``."""
    import json

    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for k, line in enumerate(timelines[:max_plots]):
        fig, ax = plt.subplots(figsize=(9, 2.6))
        hours = (line["t"] - line["t"][0]) / 3600.0
        ax.fill_between(hours, 0, line["label"], step="post", alpha=0.25, color="red", label="Fire Alarm = 1")
        if np.isfinite(line["proba"]).any():
            ax.plot(hours, line["proba"], lw=0.6, color="black", label="model probability")
        for t in line["raised"]:
            ax.axvline((t - line["t"][0]) / 3600.0, color="blue", lw=0.8)
        ax.set(xlabel="hours into the session", ylim=(-0.05, 1.05), title=f"session {k}: fire alerts (blue lines)")
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        name = f"session_{k}.png"
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        plots.append(name)
    o = evaluation.overall()
    m = evaluation.model_metrics
    lines = [f"# Detection on recordings: {Path(evaluation.source).name}", "",
             f"Measured on `{evaluation.source}` ({o['rows']:,} readings, {o['sessions']} sessions, "
             f"{o['hours']:.1f} sensor-hours). Only the real Kaggle recordings measure the real sensors; a "
             "generated file measures the simulator.", "",
             f"Model: {evaluation.model_version or 'none (rule-based detectors only)'}"
             + (f", trained on `{evaluation.model_trained_on}`" if evaluation.model_trained_on else "") + ".", "",
             "## The stream engine, per session", "", evaluation.table(), "",
             f"Ignitions {o['ignitions']}, detected {o['detected']}, missed {o['missed']}; median time to detect "
             f"{_num(o['median_delay_s'])} s, longest {_num(o['max_delay_s'])} s; {o['false_alerts']} fire alerts on "
             f"label-0 readings in {o['quiet_sensor_hours']:.2f} sensor-hours.", ""]
    if m is not None:
        lines += ["## The model alone, on the file's time split (latest part of the timeline)", "",
                  f"Test rows {m['rows']:,} ({m['positives']:,} labelled fire) at the model's threshold "
                  f"{m['threshold']:.4g}: precision {m['precision']:.4f}, recall {m['recall']:.4f}, "
                  f"F1 {m['f1']:.4f}, PR-AUC {_num(m['pr_auc'], 4)}, ROC-AUC {_num(m['roc_auc'], 4)}.", ""]
    lines += ["## Timelines", "", *[f"![{p}]({p})" for p in plots], ""]
    (out_dir / "evaluation.json").write_text(json.dumps(evaluation.as_dict(), indent=2, default=float))
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


__all__ = ["MAX_GAP_S", "Ignition", "RecordingEvaluation", "SessionResult", "evaluate_recording",
           "replay_sessions", "session_slices", "write_recording_report"]
