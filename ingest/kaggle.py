"""The Kaggle "Smoke Detection Dataset" CSV: read it into canonical columns.

The file (users download it from Kaggle, see ``data/README.md``; it is never
committed) has the header of :data:`ingest.schema.KAGGLE_HEADER`: an unnamed
row-index column, ``UTC`` epoch seconds, the 12 measurements, ``CNT`` (a sample
counter within a recording session) and ``Fire Alarm`` (0/1).

:func:`read_kaggle_csv` renames to canonical names and repairs nothing: a cell
that is empty stays ``None`` and a cell that is not a number stays its text, so
that :func:`ingest.validation.validate_records` rejects that row with
``missing_field`` or ``wrong_type`` (a column without such cells is plain
``float64``). ``CNT`` is kept as metadata (``cnt``); it and ``UTC`` leak the
label and are never features.

Files in this format for tests and for a first model are written by
:mod:`ingest.kaggle_generator`; this module only reads.

>>> import tempfile, pathlib
>>> from ingest.kaggle_generator import write_kaggle_csv
>>> tmp = tempfile.TemporaryDirectory()
>>> path = pathlib.Path(tmp.name) / "smoke.csv"
>>> _ = write_kaggle_csv(path, rows=2_000, seed=7, bad_rows=3)
>>> frame = read_kaggle_csv(path)
>>> len(frame), frame["sensor_id"].iloc[0], sorted(set(frame["fire_alarm"].dropna()))
(2000, 'kaggle-0', [0, 1])
>>> tmp.cleanup()
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.schema import (
    CANONICAL_TO_KAGGLE,
    KAGGLE_COUNTER,
    KAGGLE_HEADER,
    KAGGLE_LABEL,
    KAGGLE_TIMESTAMP,
    KAGGLE_TO_CANONICAL,
    LABEL,
    MEASUREMENTS,
    SENSOR_ID,
    TIMESTAMP,
    Reason,
)

DEFAULT_SENSOR_ID = "kaggle-0"
COUNTER = "cnt"


class KaggleFormatError(ValueError):
    """A file that is not in the Kaggle smoke CSV format; the message names the file and the cause."""


def read_kaggle_csv(path: str | Path, sensor_id: str = DEFAULT_SENSOR_ID) -> pd.DataFrame:
    """A Kaggle-format CSV -> ``sensor_id, timestamp, <12 measurements>, fire_alarm, cnt``.

    One sensor id for the whole file. Cells that are empty or not numbers are
    kept (as ``None`` or their text) for validation to reject; see the module docs.
    """
    path = Path(path)
    try:
        raw = _read_cells(path)
    except FileNotFoundError:
        raise KaggleFormatError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise KaggleFormatError(f"{path}: not a readable CSV: {err}") from None
    columns = list(raw.columns)
    if columns and (columns[0] == "" or columns[0].startswith("Unnamed: 0")):
        columns = columns[1:]  # the row-index column; some copies of the file drop it
    expected = list(KAGGLE_HEADER[1:])
    if columns != expected:
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected]
        raise KaggleFormatError(
            f"{path}: not the Kaggle smoke CSV header"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
            + ("" if missing or extra else "; columns out of order"))
    out = pd.DataFrame({SENSOR_ID: pd.Series([sensor_id] * len(raw), dtype=object)})
    out[TIMESTAMP] = _numbers(raw[KAGGLE_TIMESTAMP])
    for name in MEASUREMENTS:
        out[name] = _numbers(raw[CANONICAL_TO_KAGGLE[name]])
    label = _numbers(raw[KAGGLE_LABEL])
    out[LABEL] = label.astype(np.int64) if label.dtype == np.float64 and _all_integral(label) else label
    out[COUNTER] = pd.to_numeric(raw[KAGGLE_COUNTER], errors="coerce").astype("Int64")
    return out


def _read_cells(path: Path) -> pd.DataFrame:
    """The CSV's cells: numbers when every cell of the file is one (fast), else text to classify."""
    try:
        fast = pd.read_csv(path, engine="pyarrow")
    except Exception:  # any parse trouble: the text path below reports it precisely
        fast = None
    if fast is not None and all(pd.api.types.is_numeric_dtype(t) for t in fast.dtypes[1:]) \
            and not fast.iloc[:, 1:].isna().to_numpy().any():
        return fast
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)


def _numbers(text: pd.Series) -> pd.Series:
    """A column of CSV text -> float64, or object keeping the cells that are not numbers as they are."""
    if pd.api.types.is_numeric_dtype(text.dtype):
        return text.astype(np.float64)
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna().to_numpy()
    if not bad.any():
        return values.astype(np.float64)
    cells = values.astype(object).to_numpy(copy=True)
    for k in np.flatnonzero(bad):
        cell = text.iat[k].strip()
        if not cell:
            cells[k] = None  # empty: missing_field
            continue
        try:
            cells[k] = float(cell)  # "nan", "inf": not_finite
        except ValueError:
            cells[k] = text.iat[k]  # text: wrong_type
    return pd.Series(cells, index=text.index, dtype=object)


def _all_integral(values: pd.Series) -> bool:
    return bool(np.all(np.mod(values.to_numpy(), 1.0) == 0.0))


def kaggle_label_problems(labels: pd.Series) -> dict[int, tuple[str, str]]:
    """Rows whose ``fire_alarm`` is not 0 or 1: position -> (reason, detail), with validation's reasons."""
    problems: dict[int, tuple[str, str]] = {}
    for k, value in enumerate(labels.tolist()):
        if value is None:
            problems[k] = (Reason.MISSING_FIELD, "empty")
        elif isinstance(value, str):
            problems[k] = (Reason.WRONG_TYPE, f"{value!r} is not 0 or 1")
        elif not math.isfinite(value):
            problems[k] = (Reason.NOT_FINITE, f"{value!r} is not 0 or 1")
        elif value not in (0, 1):
            problems[k] = (Reason.OUT_OF_RANGE, f"{value!r} is not 0 or 1")
    return problems


__all__ = ["COUNTER", "DEFAULT_SENSOR_ID", "KAGGLE_TO_CANONICAL", "KaggleFormatError", "kaggle_label_problems",
           "read_kaggle_csv"]
