"""Batch loading: a Kaggle-format CSV or the simulator's readings file into the validated Parquet lake.

Every row goes through :func:`ingest.validation.validate_records` (the Kaggle
CSV) or :func:`ingest.validation.validate_messages` (the simulator's wire
messages), the same checks the stream applies. Accepted rows go to the lake
(:mod:`ingest.lake`) with the label ``fire_alarm`` (from the CSV, or from the
simulator's ground-truth incident log); rejected rows go to the rejects file
beside it with their reasons and the original row. A missing cell is
``missing_field``, never a zero; nothing is repaired.

Files are keyed by the source file's content fingerprint (and chunk number), so
loading the same file twice replaces its files instead of adding duplicates.

>>> import tempfile, pathlib
>>> from ingest.kaggle_generator import write_kaggle_csv
>>> workdir = tempfile.TemporaryDirectory(); tmp = pathlib.Path(workdir.name)
>>> _ = write_kaggle_csv(tmp / "smoke.csv", rows=1_000, seed=1, bad_rows=2)
>>> report = load_file(tmp / "smoke.csv", tmp / "lake")
>>> report.accepted, report.rejected, report.reasons
(998, 2, {'missing_field': 1, 'wrong_type': 1})
>>> workdir.cleanup()
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from ingest.kaggle import DEFAULT_SENSOR_ID, kaggle_label_problems, read_kaggle_csv
from ingest.lake import write_lake_file, write_rejects
from ingest.progress import RowProgress
from ingest.schema import LABEL, MEASUREMENTS, SENSOR_ID, TIMESTAMP
from ingest.simulator import fire_labels, read_incident_log
from ingest.validation import Problem, ValidatedBatch, validate_messages, validate_records

log = logging.getLogger(__name__)

CHUNK_ROWS = 100_000


class LoadError(ValueError):
    """A source that cannot be loaded at all (unknown kind, unreadable); the message says why."""


@dataclass
class LoadReport:
    """What one load did: rows accepted into the lake and rejected beside it, by reason."""

    source: Path
    key: str
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    rejects_files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.source.name}: {self.accepted:,} rows into the lake, {self.rejected:,} rejected"
        if self.reasons:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in sorted(self.reasons.items())) + ")"
        return text


def fingerprint(path: str | Path) -> str:
    """A short content hash of a file: the lake key of what was loaded from it.

    >>> import tempfile; f = tempfile.NamedTemporaryFile(); _ = f.write(b"x"); f.flush()
    >>> fingerprint(f.name)
    'src-2d711642b726b044'
    >>> f.close()
    """
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return "src-" + digest.hexdigest()[:16]


def load_file(path: str | Path, lake_root: str | Path, *, sensor_id: str = DEFAULT_SENSOR_ID,
              incident_log: str | Path | None = None, show_progress: bool = False) -> LoadReport:
    """Load a ``.csv`` (Kaggle format) or ``.jsonl`` (simulator readings) file into the lake at ``lake_root``.

    ``sensor_id`` names the sensor of a Kaggle file; ``incident_log`` labels
    simulator readings (default: ``incidents.jsonl`` beside them, if present).
    """
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    report = LoadReport(path, fingerprint(path))
    if path.suffix.lower() == ".csv":
        chunks = _kaggle_chunks(path, sensor_id)
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        log_path = Path(incident_log) if incident_log else path.with_name("incidents.jsonl")
        incidents = read_incident_log(log_path) if log_path.is_file() else None
        if incidents is None:
            log.warning("%s: no incident log at %s; loading without labels", path, log_path)
        chunks = _message_chunks(path, incidents)
    else:
        raise LoadError(f"{path}: unknown kind of file (expected a Kaggle .csv or a simulator .jsonl)")
    reasons: Counter[str] = Counter()
    with RowProgress(show_progress, f"loading {path.name}") as progress:
        for n, (accepted, rejects) in enumerate(chunks):
            key = f"{report.key}-{n:05d}"
            report.files += write_lake_file(lake_root, key, accepted) if len(accepted) else []
            written = write_rejects(lake_root, key, rejects)
            if written:
                report.rejects_files.append(written)
            report.accepted += len(accepted)
            report.rejected += len(rejects)
            reasons.update(r for joined in rejects["reasons"] for r in joined.split(","))
            progress.advance(len(accepted) + len(rejects))
    report.reasons = dict(sorted(reasons.items()))
    return report


def _kaggle_chunks(path: Path, sensor_id: str) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    frame = read_kaggle_csv(path, sensor_id=sensor_id)
    for first in range(0, max(len(frame), 1), CHUNK_ROWS):
        part = frame.iloc[first:first + CHUNK_ROWS]
        records = part[[SENSOR_ID, TIMESTAMP, *MEASUREMENTS]].to_dict("records")
        batch = validate_records(records)
        for k, (reason, detail) in kaggle_label_problems(part[LABEL]).items():
            batch.rejected.setdefault(k, []).append(Problem(LABEL, reason, detail))
        keep = np.array([i not in batch.rejected for i in batch.index.tolist()], dtype=bool)
        accepted = _accepted_frame(batch, keep)
        accepted[LABEL] = part[LABEL].to_numpy()[batch.index[keep]].astype(np.int64)
        raws = [orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY, default=str)
                for row in part.drop(columns=["cnt"]).to_dict("records")]
        yield accepted, _rejects_frame(path.name, first, batch.rejected, raws)


def _message_chunks(path: Path, incidents) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    with open(path, "rb") as lines:
        first = 0
        while True:
            raws = [line.rstrip(b"\r\n") for _, line in zip(range(CHUNK_ROWS), lines, strict=False)]
            if not raws:
                return
            batch = validate_messages(raws)
            accepted = _accepted_frame(batch, np.ones(len(batch), dtype=bool))
            if incidents is not None:
                accepted[LABEL] = fire_labels(accepted[SENSOR_ID].tolist(), accepted[TIMESTAMP].to_numpy(),
                                              incidents)
            yield accepted, _rejects_frame(path.name, first, batch.rejected, raws)
            first += len(raws)


def _accepted_frame(batch: ValidatedBatch, keep: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(batch.values[keep], columns=list(MEASUREMENTS))
    frame.insert(0, TIMESTAMP, batch.timestamps[keep])
    frame.insert(0, SENSOR_ID, pd.Series([s for s, k in zip(batch.sensor_ids, keep, strict=True) if k],
                                         dtype=object))
    return frame


def _rejects_frame(source: str, first: int, rejected: dict[int, list[Problem]], raws: list[bytes]
                   ) -> pd.DataFrame:
    positions = sorted(rejected)
    return pd.DataFrame({
        "source": [source] * len(positions),
        "position": np.array([first + k for k in positions], dtype=np.int64),
        "reasons": [",".join(dict.fromkeys(p.reason for p in rejected[k])) for k in positions],
        "problems": [orjson.dumps([p.as_dict() for p in rejected[k]]).decode() for k in positions],
        "raw": [raws[k] for k in positions],
    })
