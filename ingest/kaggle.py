"""The Kaggle "Smoke Detection Dataset" CSV: read it into canonical columns, or generate a look-alike.

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

:func:`write_kaggle_csv` writes a realistic file of the same format for tests,
from the sensor physics of :mod:`ingest.incidents`: time-ordered sessions of
quiet indoor and outdoor air, cooking, and wood, gas and candle fires, in which
the signals rise together; about 71% of rows are labelled 1, as in the real data.

>>> import tempfile, pathlib
>>> tmp = tempfile.TemporaryDirectory()
>>> path = pathlib.Path(tmp.name) / "smoke.csv"
>>> made = write_kaggle_csv(path, rows=2_000, seed=7, bad_rows=3)
>>> frame = read_kaggle_csv(path)
>>> len(frame), frame["sensor_id"].iloc[0], sorted(set(frame["fire_alarm"].dropna()))
(2000, 'kaggle-0', [0, 1])
>>> 0.65 < made.fire_share < 0.78
True
>>> tmp.cleanup()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.incidents import (
    SIGNATURES,
    IncidentKind,
    blend_coarse,
    draw_baselines,
    effect,
    intensity,
    kind_code,
)
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
# The real recordings are from June 2022, one reading per second.
_FIRST_UTC = 1_654_712_187
FIRE_SHARE = 0.715


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


# --- the generator -----------------------------------------------------------------------------

# Session kinds of the real recordings: (incident or None for quiet air, environment, label, weight).
_SESSIONS: dict[str, tuple[IncidentKind | None, str, int, float]] = {
    "indoor": (None, "indoor", 0, 0.45),
    "outdoor": (None, "outdoor", 0, 0.35),
    "cooking": (IncidentKind.NUISANCE, "indoor", 0, 0.20),
    "wood_smouldering": (IncidentKind.SMOULDERING, "indoor", 1, 0.25),
    "wood_flaming": (IncidentKind.FLAMING, "indoor", 1, 0.15),
    "gas": (IncidentKind.GAS, "indoor", 1, 0.3),
    "candle": (IncidentKind.CANDLE, "indoor", 1, 0.3),
}
# Bad rows for loader tests, in the order they are injected: (what, the reason validation gives).
BAD_ROW_KINDS: tuple[tuple[str, str], ...] = (
    ("missing cell", Reason.MISSING_FIELD),
    ("non-numeric cell", Reason.WRONG_TYPE),
    ("value above its range", Reason.OUT_OF_RANGE),
    ("value below its range", Reason.OUT_OF_RANGE),
    ("timestamp not a number", Reason.BAD_TIMESTAMP),
)


@dataclass(frozen=True)
class Session:
    kind: str
    first_row: int
    rows: int
    label: int


@dataclass
class GeneratedCsv:
    """What :func:`write_kaggle_csv` wrote: sessions, and the rows made bad with the reason expected."""

    path: Path
    rows: int
    fire_share: float
    sessions: list[Session] = field(default_factory=list)
    bad_rows: dict[int, str] = field(default_factory=dict)  # row position -> expected reason


def write_kaggle_csv(path: str | Path, rows: int = 5_000, seed: int = 0, bad_rows: int = 0,
                     sessions: int | None = None) -> GeneratedCsv:
    """Write a realistic Kaggle-format CSV of ``rows`` readings, reproducible from ``seed``.

    ``sessions`` recording sessions (default: about one per 250 rows, at least 12)
    in time order, one reading per second, with gaps between sessions. With
    ``bad_rows`` > 0 that many rows are spoiled, cycling through
    :data:`BAD_ROW_KINDS`; their positions and expected reasons are returned.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    rng = np.random.default_rng(seed)
    n_sessions = sessions or max(12, rows // 250)
    lengths = rng.uniform(0.5, 1.5, n_sessions)
    lengths = np.maximum(1, np.floor(lengths / lengths.sum() * rows)).astype(int)
    lengths[-1] += rows - lengths.sum()
    if lengths[-1] < 1:
        raise ValueError(f"{rows} rows is too few for {n_sessions} sessions")
    kinds = _session_kinds(rng, lengths)

    blocks: list[np.ndarray] = []
    labels = np.empty(rows, dtype=np.int64)
    utc = np.empty(rows, dtype=np.int64)
    cnt = np.empty(rows, dtype=np.int64)
    written: list[Session] = []
    start, first = _FIRST_UTC, 0
    for kind, length in zip(kinds, lengths, strict=True):
        incident, environment, label, _ = _SESSIONS[kind]
        if incident is not None and rng.random() < 0.3:
            environment = "outdoor"
        blocks.append(_session_values(rng, incident, environment, int(length)))
        rows_of = slice(first, first + length)
        labels[rows_of] = label
        utc[rows_of] = start + np.arange(length)
        cnt[rows_of] = np.arange(length)
        written.append(Session(kind, first, int(length), label))
        start += int(length) + int(rng.uniform(60, 7_200))
        first += length

    frame = pd.DataFrame(np.vstack(blocks), columns=[CANONICAL_TO_KAGGLE[m] for m in MEASUREMENTS])
    frame.insert(0, KAGGLE_TIMESTAMP, utc)
    frame[KAGGLE_COUNTER] = cnt
    frame[KAGGLE_LABEL] = labels
    frame, spoiled = _spoil(rng, frame, bad_rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=True, index_label="")
    return GeneratedCsv(path, rows, float(labels.mean()), written, spoiled)


def _session_kinds(rng: np.random.Generator, lengths: np.ndarray) -> list[str]:
    """Kinds of sessions so that about FIRE_SHARE of rows are labelled 1."""
    fire = [k for k, v in _SESSIONS.items() if v[2] == 1]
    quiet = [k for k, v in _SESSIONS.items() if v[2] == 0]
    kinds: list[str] = []
    fire_rows = 0
    order = rng.permutation(len(lengths))
    choose_fire = np.zeros(len(lengths), dtype=bool)
    for k in order:  # greedy in random order: label a session 1 while fire rows are short of the share
        if fire_rows + lengths[k] / 2 <= FIRE_SHARE * lengths.sum():
            choose_fire[k] = True
            fire_rows += lengths[k]
    for is_fire in choose_fire:
        pool = fire if is_fire else quiet
        weights = np.array([_SESSIONS[k][3] for k in pool])
        kinds.append(pool[rng.choice(len(pool), p=weights / weights.sum())])
    return kinds


def _session_values(rng: np.random.Generator, incident: IncidentKind | None, environment: str,
                    length: int) -> np.ndarray:
    """Readings of one recording session (one sensor, one per second)."""
    base = draw_baselines(rng, [environment])
    idx = np.zeros(length, dtype=np.int64)
    latent = base.latent(idx)
    # Slow drift of temperature and humidity (a random walk per second).
    latent[:, 0] += np.cumsum(rng.normal(0.0, 0.01, length))
    latent[:, 1] += np.cumsum(rng.normal(0.0, 0.02, length))
    if incident is not None:
        code = kind_code(incident)
        codes = np.full(length, code)
        elapsed = np.arange(length, dtype=np.float64)
        # A fire is lit near the start and burns through the session; turbulence makes it flicker.
        level = intensity(codes, elapsed + 0.05 * length, np.full(length, 1.1 * length))
        level *= np.exp(_smooth_noise(rng, length, 0.6))
        size = np.full(length, rng.lognormal(0.0, SIGNATURES[incident].spread))
        latent += effect(codes, level, size)
        blend_coarse(latent, codes, level, size)
    return base.measure(rng, idx, latent)


def _smooth_noise(rng: np.random.Generator, length: int, sigma: float) -> np.ndarray:
    """AR(1) noise with a ~30 s memory and stationary standard deviation ``sigma``."""
    phi = math.exp(-1.0 / 30.0)
    shocks = rng.normal(0.0, sigma * math.sqrt(1 - phi * phi), length)
    out = np.empty(length)
    acc = rng.normal(0.0, sigma)
    for k in range(length):
        acc = phi * acc + shocks[k]
        out[k] = acc
    return out


def _spoil(rng: np.random.Generator, frame: pd.DataFrame, count: int) -> tuple[pd.DataFrame, dict[int, str]]:
    """Spoil ``count`` distinct rows (never the first); the new frame and position -> expected reason."""
    if count <= 0:
        return frame, {}
    if count >= len(frame):
        raise ValueError(f"cannot spoil {count} of {len(frame)} rows")
    positions = rng.choice(np.arange(1, len(frame)), size=count, replace=False)
    spoiled: dict[int, str] = {}
    frame = frame.astype(object)
    for n, pos in enumerate(sorted(positions.tolist())):
        what, reason = BAD_ROW_KINDS[n % len(BAD_ROW_KINDS)]
        column = CANONICAL_TO_KAGGLE[MEASUREMENTS[n % len(MEASUREMENTS)]]
        if what == "missing cell":
            frame.iat[pos, frame.columns.get_loc(column)] = ""
        elif what == "non-numeric cell":
            frame.iat[pos, frame.columns.get_loc(column)] = "n/a"
        elif what == "value above its range":
            frame.iat[pos, frame.columns.get_loc("Humidity[%]")] = 140.0
        elif what == "value below its range":
            frame.iat[pos, frame.columns.get_loc("PM2.5")] = -3.0
        else:
            frame.iat[pos, frame.columns.get_loc(KAGGLE_TIMESTAMP)] = "yesterday"
        spoiled[pos] = reason
    return frame, spoiled


__all__ = [
    "BAD_ROW_KINDS", "COUNTER", "DEFAULT_SENSOR_ID", "KAGGLE_TO_CANONICAL", "GeneratedCsv",
    "KaggleFormatError", "Session", "kaggle_label_problems", "read_kaggle_csv", "write_kaggle_csv",
]
