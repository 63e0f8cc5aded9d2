"""The Kaggle CSV format, the Parquet lake and the batch loader, on real files."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from ingest.kaggle import (
    BAD_ROW_KINDS,
    KaggleFormatError,
    read_kaggle_csv,
    write_kaggle_csv,
)
from ingest.lake import LakeError, read_lake, read_rejects, stream_key, write_lake_file, write_rejects
from ingest.loader import LoadError, fingerprint, load_file
from ingest.schema import KAGGLE_HEADER, LABEL, MEASUREMENTS, SENSOR_ID, TIMESTAMP, Reason
from ingest.settings import SimulatorSettings
from ingest.simulator import read_incident_log, write_simulation
from ingest.validation import validate_records

# --- the Kaggle format -----------------------------------------------------------------------


def test_generated_file_has_the_exact_kaggle_header_and_is_reproducible(tmp_path):
    a = write_kaggle_csv(tmp_path / "a.csv", rows=3_000, seed=5)
    b = write_kaggle_csv(tmp_path / "b.csv", rows=3_000, seed=5)
    write_kaggle_csv(tmp_path / "c.csv", rows=3_000, seed=6)
    header = (tmp_path / "a.csv").read_text().splitlines()[0]
    assert header == ",".join(KAGGLE_HEADER)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    assert a.sessions == b.sessions


def test_generated_data_looks_like_the_dataset(tmp_path):
    made = write_kaggle_csv(tmp_path / "s.csv", rows=20_000, seed=3)
    frame = read_kaggle_csv(tmp_path / "s.csv")
    assert 0.66 < frame[LABEL].mean() < 0.77
    assert not validate_records(frame[[SENSOR_ID, TIMESTAMP, *MEASUREMENTS]].to_dict("records")).rejected
    assert frame[TIMESTAMP].is_monotonic_increasing
    assert frame["pressure_hpa"].mean() == pytest.approx(938.6, abs=1.0)
    assert frame["raw_h2_ticks"].mean() == pytest.approx(12_942, rel=0.03)
    assert frame["raw_ethanol_ticks"].mean() == pytest.approx(19_754, rel=0.03)
    # Heavy tails: particle counts and TVOC spike by orders of magnitude above their medians.
    for name in ("tvoc_ppb", "pm2_5_ugm3", "nc0_5_per_cm3"):
        assert frame[name].quantile(0.999) > 30 * frame[name].median(), name
    # Sessions in time order, CNT restarting in each.
    assert len(made.sessions) >= 12
    starts = [s.first_row for s in made.sessions]
    assert (frame["cnt"].iloc[starts] == 0).all()
    assert {s.kind for s in made.sessions if s.label == 1} <= {"wood_smouldering", "wood_flaming", "gas", "candle"}


# Means and standard deviations of the real data (docs/architecture.md, "The Kaggle recordings").
DATASET_MEAN_STD = {
    "temperature_c": (15.97, 14.36), "humidity_pct": (48.54, 8.87), "tvoc_ppb": (1942, 7812),
    "eco2_ppm": (670, 1906), "raw_h2_ticks": (12942, 272), "raw_ethanol_ticks": (19754, 610),
    "pressure_hpa": (938.63, 1.33), "pm1_0_ugm3": (100.6, 922.5), "pm2_5_ugm3": (184.5, 1976),
    "nc0_5_per_cm3": (491.5, 4266), "nc1_0_per_cm3": (203.6, 2215), "nc2_5_per_cm3": (80.0, 1083),
}


def test_a_full_size_file_matches_the_dataset_means_and_spreads(tmp_path):
    write_kaggle_csv(tmp_path / "full.csv", rows=62_630, seed=0)
    frame = read_kaggle_csv(tmp_path / "full.csv")
    for name, (mean, std) in DATASET_MEAN_STD.items():
        assert 0.5 < frame[name].mean() / mean < 2.0, (name, frame[name].mean())
        assert 0.25 < frame[name].std() / std < 2.5, (name, frame[name].std())


def test_fire_signals_rise_together(tmp_path):
    made = write_kaggle_csv(tmp_path / "s.csv", rows=20_000, seed=4)
    frame = read_kaggle_csv(tmp_path / "s.csv")
    fire, quiet = frame[frame[LABEL] == 1], frame[frame[LABEL] == 0]
    assert fire["tvoc_ppb"].median() > 3 * quiet["tvoc_ppb"].median()
    assert fire["eco2_ppm"].median() > quiet["eco2_ppm"].median()
    assert fire["raw_ethanol_ticks"].median() < quiet["raw_ethanol_ticks"].median()  # SGP30 ticks fall with gas
    assert fire["pm2_5_ugm3"].median() > quiet["pm2_5_ugm3"].median()
    # Within fire sessions the gas and particle signals move together.
    assert fire["tvoc_ppb"].corr(fire["pm2_5_ugm3"], method="spearman") > 0.3
    assert made.fire_share == pytest.approx(frame[LABEL].mean())


def test_bad_cells_are_kept_for_validation_never_repaired(tmp_path):
    made = write_kaggle_csv(tmp_path / "bad.csv", rows=1_000, seed=2, bad_rows=len(BAD_ROW_KINDS))
    frame = read_kaggle_csv(tmp_path / "bad.csv", sensor_id="lab-7")
    assert (frame[SENSOR_ID] == "lab-7").all()
    batch = validate_records(frame[[SENSOR_ID, TIMESTAMP, *MEASUREMENTS]].to_dict("records"))
    got = {k: {p.reason for p in problems} for k, problems in batch.rejected.items()}
    assert got == {k: {reason} for k, reason in made.bad_rows.items()}
    assert len(batch) == 1_000 - len(BAD_ROW_KINDS)
    missing = next(k for k, r in made.bad_rows.items() if r == Reason.MISSING_FIELD)
    assert any(frame.iloc[missing][m] is None for m in MEASUREMENTS), "an empty cell is None, never 0"


def test_a_file_with_the_wrong_header_is_refused_naming_the_columns(tmp_path):
    path = tmp_path / "other.csv"
    pd.DataFrame({"UTC": [1], "Temperature": [20.0]}).to_csv(path)
    with pytest.raises(KaggleFormatError, match=r"missing \[.*Humidity\[%\]"):
        read_kaggle_csv(path)
    with pytest.raises(KaggleFormatError, match="no such file"):
        read_kaggle_csv(tmp_path / "absent.csv")


def test_a_copy_without_the_index_column_reads_the_same(tmp_path):
    write_kaggle_csv(tmp_path / "s.csv", rows=300, seed=9)
    pd.read_csv(tmp_path / "s.csv", index_col=0).to_csv(tmp_path / "no_index.csv", index=False)
    pd.testing.assert_frame_equal(read_kaggle_csv(tmp_path / "s.csv"), read_kaggle_csv(tmp_path / "no_index.csv"))


# --- the lake ---------------------------------------------------------------------------------

def _rows(stamps, sensor="s1", **extra):
    frame = pd.DataFrame({SENSOR_ID: [sensor] * len(stamps), TIMESTAMP: np.asarray(stamps, dtype=float)})
    for name in MEASUREMENTS:
        frame[name] = 1.0
    for name, value in extra.items():
        frame[name] = value
    return frame


def test_rewriting_a_key_is_idempotent_and_leaves_no_temporary_files(tmp_path):
    day = 1_654_732_800.0  # 2022-06-09 00:00 UTC
    frame = _rows([day + 10, day + 86_400 + 5])
    first = write_lake_file(tmp_path, stream_key(1, 0, 1), frame)
    second = write_lake_file(tmp_path, stream_key(1, 0, 1), frame)
    assert first == second and len(first) == 2
    assert len(read_lake(tmp_path)) == 2
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert sorted(p.parent.name for p in tmp_path.rglob("*.parquet")) == ["date=2022-06-09", "date=2022-06-10"]


def test_read_lake_orders_by_time_filters_by_since_and_unions_feature_columns(tmp_path):
    day = 1_654_732_800.0
    write_lake_file(tmp_path, stream_key(0, 10, 11), _rows([day + 50, day + 40], sensor="a"))
    write_lake_file(tmp_path, stream_key(1, 0, 0), _rows([day + 45], sensor="b", tvoc_ppb_delta=3.0))
    lake = read_lake(tmp_path)
    assert lake[TIMESTAMP].tolist() == [day + 40, day + 45, day + 50]
    assert lake["tvoc_ppb_delta"].isna().tolist() == [True, False, True]
    assert read_lake(tmp_path, columns=[SENSOR_ID], since=day + 45)[SENSOR_ID].tolist() == ["b", "a"]
    with pytest.raises(LakeError, match="no columns"):
        read_lake(tmp_path, columns=["nope"])


def test_a_pyarrow_uri_works_like_a_path(tmp_path):
    uri = f"file://{tmp_path}/lake"
    write_lake_file(uri, "k1", _rows([1_654_732_900.0]))
    assert len(read_lake(tmp_path / "lake")) == len(read_lake(uri)) == 1


def test_bad_keys_and_bad_rows_are_refused(tmp_path):
    with pytest.raises(LakeError, match="no slashes"):
        write_lake_file(tmp_path, "../escape", _rows([1_654_732_900.0]))
    with pytest.raises(LakeError, match="finite epoch-seconds"):
        write_lake_file(tmp_path, "k", _rows([np.nan]))
    with pytest.raises(LakeError, match="'timestamp'"):
        write_lake_file(tmp_path, "k", pd.DataFrame({SENSOR_ID: ["a"]}))
    # A column of mixed types is refused by the lake's own check, not by a failed Arrow conversion.
    for mixed in ([1_654_732_900.0, "x"], ["2022-06-09", 1_654_732_900.0]):
        with pytest.raises(LakeError, match="finite epoch-seconds"):
            write_lake_file(tmp_path, "k", pd.DataFrame({SENSOR_ID: ["a", "b"], TIMESTAMP: mixed}))
    with pytest.raises(LakeError, match="does not exist"):
        read_lake(tmp_path / "nothing")


def test_rejects_live_beside_the_lake_and_never_mix_with_readings(tmp_path):
    write_lake_file(tmp_path, "k", _rows([1_654_732_900.0]))
    rejects = pd.DataFrame({"source": ["f.csv"], "position": [3], "reasons": ["not_json"],
                            "problems": ["[]"], "raw": [b"oops"]})
    write_rejects(tmp_path, "k", rejects)
    assert len(read_lake(tmp_path)) == 1
    assert read_rejects(tmp_path)["raw"].tolist() == [b"oops"]
    write_rejects(tmp_path, "k", rejects.iloc[0:0])  # a rerun without rejects removes the old file
    assert read_rejects(tmp_path).empty


# --- the loader -------------------------------------------------------------------------------

def test_a_kaggle_csv_loads_into_the_lake_with_bad_rows_in_the_rejects(tmp_path):
    made = write_kaggle_csv(tmp_path / "smoke.csv", rows=4_000, seed=11, bad_rows=10)
    lake = tmp_path / "lake"
    report = load_file(tmp_path / "smoke.csv", lake, sensor_id="kaggle-0")
    assert (report.accepted, report.rejected) == (3_990, 10)
    readings = read_lake(lake)
    assert len(readings) == 3_990 and set(readings[LABEL]) == {0, 1}
    assert readings[MEASUREMENTS[0]].dtype == np.float64
    rejects = read_rejects(lake).sort_values("position")
    assert dict(zip(rejects["position"], rejects["reasons"], strict=True)) == made.bad_rows
    raws = [orjson.loads(raw) for raw in rejects["raw"]]
    assert None in [value for raw in raws for value in raw.values()], "the original row, not a repaired one"
    assert all(problem["field"] for p in rejects["problems"] for problem in orjson.loads(p))
    # Loading the same file again replaces its files: no duplicates.
    again = load_file(tmp_path / "smoke.csv", lake)
    assert again.key == report.key == fingerprint(tmp_path / "smoke.csv")
    assert len(read_lake(lake)) == 3_990 and len(read_rejects(lake)) == 10


def test_simulator_output_loads_with_labels_from_the_incident_log(tmp_path):
    config = SimulatorSettings(sensors=20, rate=20, seed=8, incidents_per_sensor_hour=6, dropout_probability=0.0)
    readings_path, log_path = write_simulation(config, tmp_path / "sim", duration_s=900, start_time=1.7e9)
    with open(readings_path, "ab") as f:
        f.write(b"{not json\n")
    report = load_file(readings_path, tmp_path / "lake")
    assert (report.accepted, report.rejected, report.reasons) == (18_000, 1, {"not_json": 1})
    lake = read_lake(tmp_path / "lake")
    fires = [i for i in read_incident_log(log_path) if i.is_fire]
    assert fires and lake[LABEL].sum() > 0
    labelled = lake[lake[LABEL] == 1]
    for _, row in labelled.sample(50, random_state=0, replace=True).iterrows():
        assert any(f.sensor_id == row[SENSOR_ID] and f.start <= row[TIMESTAMP] <= f.end for f in fires)


def test_unknown_files_are_refused(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(LoadError, match="unknown kind"):
        load_file(tmp_path / "x.txt", tmp_path / "lake")
    with pytest.raises(LoadError, match="no such file"):
        load_file(tmp_path / "y.csv", tmp_path / "lake")
