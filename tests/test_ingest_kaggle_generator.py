"""The generated Kaggle-format file against the facts of the real recordings (ingest/kaggle_generator.py).

Each fact is the real file's (62,630 rows; see docs/training.md, "Simulator against the
recordings"), held on a full-size generated file within the stated tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from ingest.kaggle import read_kaggle_csv
from ingest.kaggle_generator import FIRE_KINDS, write_kaggle_csv
from ingest.schema import LABEL
from ingest.sensor_kit import ECO2_FLOOR_PPM, SGP30_INIT_S, TVOC_FLOOR_PPB

SPS30 = ["pm1_0_ugm3", "pm2_5_ugm3", "nc0_5_per_cm3", "nc1_0_per_cm3", "nc2_5_per_cm3"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    path = tmp_path_factory.mktemp("kaggle") / "full.csv"
    made = write_kaggle_csv(path, rows=62_630, seed=0)
    return made, read_kaggle_csv(path)


def test_eco2_sits_on_its_400_ppm_floor_in_about_half_the_rows(full):
    _, frame = full
    assert 0.42 <= (frame["eco2_ppm"] == ECO2_FLOOR_PPM).mean() <= 0.58  # recordings: about half
    assert frame["eco2_ppm"].min() == ECO2_FLOOR_PPM


def test_tvoc_reads_zero_in_clean_air(full):
    made, frame = full
    clean = np.concatenate([np.arange(e.first_row, e.first_row + e.rows) for s in made.sessions
                            for e in s.episodes if e.kind == "clean"])
    assert (frame["tvoc_ppb"].iloc[clean] == TVOC_FLOOR_PPB).mean() > 0.9
    assert (frame.loc[frame[LABEL] == 1, "tvoc_ppb"] > 0).mean() > 0.9


def test_sessions_start_with_the_kits_start_up_values(full):
    made, frame = full
    for session in made.sessions:
        start = frame.iloc[session.first_row:session.first_row + int(SGP30_INIT_S)]
        assert (start["cnt"].to_numpy() == np.arange(len(start))).all()
        assert (start["eco2_ppm"] == ECO2_FLOOR_PPM).all() and (start["tvoc_ppb"] == TVOC_FLOOR_PPB).all()
        assert (start[SPS30].iloc[:5] == 0).all().all()  # SPS30: exactly 0 until its first measurement
        # Raw SGP30 signals start below the session's settled clean air and climb.
        settled = frame.iloc[session.first_row + 200:session.first_row + 300]
        assert start["raw_h2_ticks"].iloc[0] < settled["raw_h2_ticks"].median() - 300
        assert start["raw_ethanol_ticks"].iloc[0] < settled["raw_ethanol_ticks"].median() - 500
    # Zeros of the particle sensor are a start-up fact, not a clean-air one.
    assert 0 < (frame["pm1_0_ugm3"] == 0).mean() < 0.01


def test_sgp30_outputs_are_integers_and_sps30_keeps_its_steps(full):
    _, frame = full
    for name in ("tvoc_ppb", "eco2_ppm", "raw_h2_ticks", "raw_ethanol_ticks"):
        assert (frame[name] % 1 == 0).all(), name
    assert np.allclose(frame["pm1_0_ugm3"] * 100, np.round(frame["pm1_0_ugm3"] * 100))


def test_dry_and_hot_air_reach_the_recordings_percentiles(full):
    _, frame = full
    assert frame["humidity_pct"].quantile(0.01) == pytest.approx(13.0, abs=2.0)  # recordings: about 13 %
    assert frame["temperature_c"].quantile(0.99) == pytest.approx(52.0, abs=3.0)  # recordings: about 52 C


def test_long_sessions_of_one_kind_few_label_changes(full):
    made, frame = full
    changes = int(np.count_nonzero(np.diff(frame[LABEL].to_numpy())))
    assert changes == made.label_changes
    assert 8 <= changes <= 12  # recordings: about 10
    assert frame[LABEL].mean() == pytest.approx(0.715, abs=0.02)
    assert all(e.kind in FIRE_KINDS for s in made.sessions for e in s.episodes if e.label == 1)


def test_each_part_of_the_time_split_holds_both_labels(full):
    _, frame = full
    labels = frame[LABEL].to_numpy()
    n = len(labels)
    for part in (labels[: int(0.7 * n)], labels[int(0.7 * n): int(0.8 * n)], labels[int(0.8 * n):]):
        assert set(part.tolist()) == {0, 1}
