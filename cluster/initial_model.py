"""The first model of a fresh stack: trained by ``smoke up`` when the registry has no production version.

The stream and Serve both load the registry's ``production`` alias, so a stack
without one could detect with its rule-based detectors only and Serve could not
predict. The training data, in order of preference:

1. the Kaggle dataset, if the user downloaded it to ``data/smoke_detection_iot.csv``
   (it is never committed);
2. the Parquet lake of an earlier run (``stream.lake_dir``);
3. a generated Kaggle-format file from the shared sensor physics
   (:func:`ingest.kaggle_generator.write_kaggle_csv`), labelled as generated in the log.

The run is the quick one (one LightGBM in this process, seconds); a sweep on
the cluster can replace it later (``smoke train`` or ``ray job submit``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ingest.settings import Settings

KAGGLE_CSV = Path("data") / "smoke_detection_iot.csv"
GENERATED_CSV = Path("data") / "generated" / "smoke_generated.csv"
GENERATED_ROWS = 30_000
# The log lines of train.pipeline that mark its stages, in order: they drive the progress bar.
TRAIN_STAGES = ("valid readings", "features", "registered")


def training_source(settings: Settings) -> tuple[Path, str]:
    """The data the first model is trained on, and a label saying where it comes from."""
    if KAGGLE_CSV.exists():
        return KAGGLE_CSV, "Kaggle dataset"
    lake = Path(settings.stream.lake_dir)
    if lake.is_dir() and any(lake.rglob("*.parquet")):
        return lake, "Parquet lake"
    return GENERATED_CSV, "generated data (download the Kaggle CSV for a real model)"


def production_version(settings: Settings) -> str | None:
    from train.registry import ModelRegistry

    return ModelRegistry(settings.train.registry_dir, settings.train.model_name).production_version()


def train_initial_model(settings: Settings, advance: Callable[[str], None]) -> tuple[str, str]:
    """Train and promote a first model; ``advance(note)`` is called once per stage (4 in all).

    Returns the version and the label of its data source.
    """
    from ingest.kaggle_generator import write_kaggle_csv
    from train.pipeline import train_and_register

    source, label = training_source(settings)
    if source == GENERATED_CSV and not source.exists():
        write_kaggle_csv(source, rows=GENERATED_ROWS, seed=settings.simulator.seed)
    advance(f"data: {label}")
    stage_log = logging.getLogger("train.pipeline")
    handler = _StageHandler(advance)
    stage_log.addHandler(handler)
    previous = stage_log.level, stage_log.propagate
    if stage_log.getEffectiveLevel() > logging.INFO:
        # Quiet mode: the stage lines feed the bar but are not printed.
        stage_log.setLevel(logging.INFO)
        stage_log.propagate = False
    try:
        version = train_and_register(settings, source, quick=True, promote="auto")
    finally:
        stage_log.removeHandler(handler)
        stage_log.level, stage_log.propagate = previous
    return version, label


class _StageHandler(logging.Handler):
    """Advances the progress bar when the training pipeline logs the end of a stage."""

    def __init__(self, advance: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.advance = advance
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for stage in TRAIN_STAGES:
            if stage in message and stage not in self.seen:
                self.seen.add(stage)
                self.advance(stage)
