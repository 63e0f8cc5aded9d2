"""`smoke evaluate` on a Kaggle-format file built so the right per-session answer is known.

Three sessions (gaps in UTC): a clean lead-in then an obvious fire (labelled from its
ignition), clean air only, and a session labelled fire whose readings stay clean (an
alarm nothing can see: missed). Replayed through the real engine (rule-based detectors).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from actors.recording_evaluation import evaluate_recording
from cluster.cli import main as smoke
from ingest.schema import CANONICAL_TO_KAGGLE, KAGGLE_COUNTER, KAGGLE_LABEL, KAGGLE_TIMESTAMP, MEASUREMENTS
from ingest.settings import load_settings

CLEAN = dict(zip(MEASUREMENTS, [21.0, 45.0, 0.0, 400.0, 12_900.0, 19_500.0, 938.8, 1.5, 1.6, 10.0, 1.7, 0.05],
                 strict=True))
FIRE = dict(zip(MEASUREMENTS, [40.0, 30.0, 20_000.0, 2_500.0, 12_000.0, 17_500.0, 938.8, 300.0, 380.0, 2_000.0,
                               390.0, 75.0], strict=True))


def _session(rng, rows: int, ignite_at: int | None, visible: bool) -> pd.DataFrame:
    level = np.zeros(rows)
    if ignite_at is not None and visible:
        level[ignite_at:] = np.clip((np.arange(rows - ignite_at) + 1) / 30.0, 0, 1)  # a 30 s rise
    values = {}
    for name in MEASUREMENTS:
        floor = name in ("tvoc_ppb", "eco2_ppm")  # the SGP30 sits exactly on its floors in clean air
        clean = np.full(rows, CLEAN[name]) if floor else CLEAN[name] * (1 + rng.normal(0, 0.002, rows))
        values[CANONICAL_TO_KAGGLE[name]] = np.round(clean + level * (FIRE[name] - CLEAN[name]), 3)
    frame = pd.DataFrame(values)
    frame[KAGGLE_COUNTER] = np.arange(rows)
    label = np.zeros(rows, dtype=int)
    if ignite_at is not None:
        label[ignite_at:] = 1
    frame[KAGGLE_LABEL] = label
    return frame


def _write(path) -> None:
    rng = np.random.default_rng(0)
    parts, start = [], 1_654_712_187
    for rows, ignite_at, visible in ((900, 600, True), (700, None, False), (500, 100, False)):
        part = _session(rng, rows, ignite_at, visible)
        part.insert(0, KAGGLE_TIMESTAMP, start + np.arange(rows))
        parts.append(part)
        start += rows + 3_600
    pd.concat(parts, ignore_index=True).to_csv(path, index=True, index_label="")


def test_the_per_session_table_is_the_known_answer(tmp_path):
    _write(tmp_path / "known.csv")
    evaluation, timelines = evaluate_recording(load_settings(environ={}), tmp_path / "known.csv", None)
    fire, quiet, unseen = evaluation.sessions
    assert [s.rows for s in evaluation.sessions] == [900, 700, 500]
    assert [len(s.ignitions) for s in evaluation.sessions] == [1, 0, 1]
    assert fire.ignitions[0].onset == 1_654_712_187 + 600
    assert fire.first_delay_s is not None and 0 <= fire.first_delay_s <= 60  # an obvious fire, seconds
    assert [s.missed for s in evaluation.sessions] == [0, 0, 1]
    assert [s.false_alerts for s in evaluation.sessions] == [0, 0, 0]
    assert quiet.quiet_hours == 700 / 3600 and unseen.fire_rows == 400
    overall = evaluation.overall()
    assert (overall["ignitions"], overall["detected"], overall["missed"]) == (2, 1, 1)
    assert len(timelines) == 3 and len(timelines[0]["raised"]) >= 1


def test_smoke_evaluate_writes_the_report(tmp_path, capsys):
    _write(tmp_path / "known.csv")
    out = tmp_path / "report"
    assert smoke(["evaluate", "--source", str(tmp_path / "known.csv"), "--model", "none", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| session |" in printed and "| all |" in printed
    assert {"report.md", "evaluation.json", "session_0.png", "session_2.png"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["overall"]["missed"] == 1
    assert "generated file measures the simulator" in (out / "report.md").read_text()
    assert smoke(["evaluate", "--source", str(tmp_path / "absent.csv"), "--model", "none", "--out", str(out)]) == 1
