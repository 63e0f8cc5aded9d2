"""How close two Kaggle-format files are: per-column quantiles, floor shares and a two-sample distance.

``smoke sample-csv OUT --compare REAL`` writes a generated file and prints this
comparison against any file in the format (the real recordings when the user has
them), so the simulator's distance from the real sensors is measured, not assumed.

Per measurement: the 1st, 25th, 50th, 75th and 99th percentiles of each file, the
share of rows exactly at the sensor's floor (0 for TVOC and the SPS30 channels, 400
ppm for eCO2; the other columns have none) and the two-sample Kolmogorov-Smirnov
statistic (the largest gap between the two cumulative distributions: 0 is the same
distribution, 1 disjoint). Then the label: share of fire rows and how often it changes.
Rows that validation would reject are left out of both files.

>>> import tempfile, pathlib
>>> from ingest.kaggle_generator import write_kaggle_csv
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> a = write_kaggle_csv(tmp / "a.csv", rows=2_000, seed=1).path
>>> comparison = compare_kaggle_files(a, a)
>>> max(row.ks for row in comparison.columns)
0.0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from ingest.kaggle import read_kaggle_csv
from ingest.schema import LABEL, MEASUREMENTS, SENSOR_ID, TIMESTAMP
from ingest.sensor_kit import ECO2_FLOOR_PPM, TVOC_FLOOR_PPB
from ingest.validation import validate_records

QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)
# The value each sensor reports at its floor: the SGP30's clean-air outputs and the SPS30's start-up zeros.
FLOORS: dict[str, float] = {
    "tvoc_ppb": TVOC_FLOOR_PPB, "eco2_ppm": ECO2_FLOOR_PPM, "pm1_0_ugm3": 0.0, "pm2_5_ugm3": 0.0,
    "nc0_5_per_cm3": 0.0, "nc1_0_per_cm3": 0.0, "nc2_5_per_cm3": 0.0,
}


@dataclass(frozen=True)
class ColumnComparison:
    name: str
    quantiles_a: tuple[float, ...]
    quantiles_b: tuple[float, ...]
    floor_share_a: float | None
    floor_share_b: float | None
    ks: float


@dataclass(frozen=True)
class FileComparison:
    a: Path
    b: Path
    rows: tuple[int, int]
    fire_share: tuple[float, float]
    label_changes: tuple[int, int]
    columns: list[ColumnComparison]

    def table(self) -> str:
        """A Markdown table: one line per measurement, then the label."""
        q = "/".join(f"p{round(x * 100)}" for x in QUANTILES)
        lines = [f"A = {self.a.name} ({self.rows[0]:,} rows), B = {self.b.name} ({self.rows[1]:,} rows)", "",
                 f"| column | A {q} | B {q} | at floor A / B | KS distance |", "| --- | --- | --- | --- | --- |"]
        for c in self.columns:
            floor = "-" if c.floor_share_a is None else f"{c.floor_share_a:.1%} / {c.floor_share_b:.1%}"
            lines.append(f"| {c.name} | {_fmt(c.quantiles_a)} | {_fmt(c.quantiles_b)} | {floor} | {c.ks:.3f} |")
        lines += ["", f"fire rows: A {self.fire_share[0]:.1%}, B {self.fire_share[1]:.1%}; "
                      f"label changes: A {self.label_changes[0]}, B {self.label_changes[1]}"]
        return "\n".join(lines)


def compare_kaggle_files(a: str | Path, b: str | Path) -> FileComparison:
    """Compare two Kaggle-format files (see the module docs)."""
    frames = [_valid(Path(p)) for p in (a, b)]
    columns = []
    for name in MEASUREMENTS:
        x, y = (f[name].to_numpy(dtype=np.float64) for f in frames)
        floor = FLOORS.get(name)
        columns.append(ColumnComparison(
            name, tuple(np.quantile(x, QUANTILES).tolist()), tuple(np.quantile(y, QUANTILES).tolist()),
            None if floor is None else float(np.mean(x == floor)),
            None if floor is None else float(np.mean(y == floor)),
            float(ks_2samp(x, y).statistic)))
    labels = [f[LABEL].to_numpy(dtype=np.int64) for f in frames]
    return FileComparison(Path(a), Path(b), (len(labels[0]), len(labels[1])),
                          (float(labels[0].mean()), float(labels[1].mean())),
                          (int(np.count_nonzero(np.diff(labels[0]))), int(np.count_nonzero(np.diff(labels[1])))),
                          columns)


def _valid(path: Path) -> pd.DataFrame:
    """The file's rows that validation accepts and whose label is 0 or 1, in file order."""
    frame = read_kaggle_csv(path)
    batch = validate_records(frame[[SENSOR_ID, TIMESTAMP, *MEASUREMENTS]].to_dict("records"))
    out = pd.DataFrame(batch.values, columns=list(MEASUREMENTS))
    out[LABEL] = pd.to_numeric(frame[LABEL].iloc[batch.index], errors="coerce").to_numpy()
    return out[out[LABEL].isin((0, 1))].reset_index(drop=True)


def _fmt(values: tuple[float, ...]) -> str:
    return " / ".join(f"{v:.4g}" for v in values)


__all__ = ["FLOORS", "QUANTILES", "ColumnComparison", "FileComparison", "compare_kaggle_files"]
