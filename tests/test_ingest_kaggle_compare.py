"""Comparing two Kaggle-format files (ingest/kaggle_compare.py) and `smoke sample-csv --compare`."""

from __future__ import annotations

import pandas as pd
import pytest

from cluster.cli import main as smoke
from ingest.kaggle_compare import compare_kaggle_files
from ingest.kaggle_generator import write_kaggle_csv


def test_a_file_is_at_distance_zero_from_itself_and_a_shifted_copy_is_not(tmp_path):
    a = write_kaggle_csv(tmp_path / "a.csv", rows=3_000, seed=2).path
    frame = pd.read_csv(a)
    frame["eCO2[ppm]"] = frame["eCO2[ppm]"] + 50  # no row on the floor any more
    frame.to_csv(tmp_path / "b.csv", index=False)
    same = compare_kaggle_files(a, a)
    assert all(c.ks == 0 for c in same.columns)
    other = {c.name: c for c in compare_kaggle_files(a, tmp_path / "b.csv").columns}
    assert other["eco2_ppm"].floor_share_a > 0.3 and other["eco2_ppm"].floor_share_b == 0
    assert other["eco2_ppm"].ks > 0.3 and other["temperature_c"].ks == 0
    assert other["eco2_ppm"].quantiles_b[2] == pytest.approx(other["eco2_ppm"].quantiles_a[2] + 50)
    assert other["temperature_c"].floor_share_a is None  # no floor for temperature


def test_sample_csv_compare_prints_the_table(tmp_path, capsys):
    real = write_kaggle_csv(tmp_path / "real.csv", rows=2_000, seed=9).path
    assert smoke(["sample-csv", str(tmp_path / "gen.csv"), "--rows", "2000", "--compare", str(real)]) == 0
    out = capsys.readouterr().out
    assert "| eco2_ppm |" in out and "KS distance" in out and "label changes" in out
    assert smoke(["sample-csv", str(tmp_path / "gen.csv"), "--rows", "500", "--compare",
                  str(tmp_path / "absent.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
