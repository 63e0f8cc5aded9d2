"""Generate files in the Kaggle smoke CSV format that look like the real recordings (for tests and a first model).

The real file is never committed (see ``data/README.md``); tests, benchmarks and
``smoke up`` without it use a file written by :func:`write_kaggle_csv`, which
:func:`ingest.kaggle.read_kaggle_csv` reads like the real one.

What it reproduces of the recordings (62,630 rows at 1 Hz; the figures the
tests in ``tests/test_ingest_kaggle_generator.py`` hold it to):

- **Few long sessions, few label changes.** A handful of recording sessions
  (``CNT`` from 0, gaps in ``UTC`` between them) in indoor, outdoor and one hot,
  dry environment. Within a session, clean air alternates with a few long fire
  experiments (wood smouldering or flaming, gas, candle), labelled 1 from
  ignition to the end of the experiment; about 71.5% of rows are labelled 1 and
  the label changes about 10 times in a full-size file. Every session starts in
  clean air, labelled 0.
- **How the kit reports** (:mod:`ingest.sensor_kit`): the SGP30's 15 s start-up
  at 400 ppm / 0 ppb and its raw signals settling up from below clean air; clean
  air at exactly 0 ppb TVOC and 400 ppm eCO2 (about half of all rows); the SPS30
  at exactly 0 until its first measurement; integer SGP30 outputs and the SPS30's
  steps.
- **Hot, dry air**: one session heats from 36 to 56 C while humidity falls from
  25 to 10 %, so the humidity's 1st percentile is about 13 % and the
  temperature's 99th about 52 C, as in the recordings.
- The signals of a fire rise together, from the physics of :mod:`ingest.incidents`.

Sessions are laid out so that each part of the default time split
(:class:`ingest.settings.TrainSettings`: earliest 70% train, next 10% validate,
latest 20% test) holds both labels, and the test part an ignition (so time to detect
is measured), when the file is large enough to.

>>> import tempfile, pathlib
>>> tmp = tempfile.TemporaryDirectory()
>>> made = write_kaggle_csv(pathlib.Path(tmp.name) / "smoke.csv", rows=2_000, seed=7, bad_rows=3)
>>> 0.65 < made.fire_share < 0.78, made.sessions[0].episodes[0].kind
(True, 'clean')
>>> tmp.cleanup()
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.incidents import (
    LATENT,
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
    KAGGLE_LABEL,
    KAGGLE_TIMESTAMP,
    MEASUREMENTS,
    Reason,
)
from ingest.sensor_kit import compensated_quiet_air, draw_power_on, report

# The real recordings are from June 2022, one reading per second.
_FIRST_UTC = 1_654_712_187
FIRE_SHARE = 0.715
# Share of rows in the hot, dry session, and its ramps (start, end) of temperature and humidity.
HOT_DRY_SHARE = 0.05
HOT_DRY_TEMPERATURE_C = (36.0, 56.0)
HOT_DRY_HUMIDITY_PCT = (25.0, 10.0)
# A file holds only a few fires: their sizes vary little (log-normal sigma), and the heavy tails of the
# recordings come from each fire's flicker (log-normal, this sigma, ~30 s memory) instead.
EPISODE_SIZE_SIGMA = 0.3
FLICKER_SIGMA = 1.5
# Coarse share that dense smoke (PM1.0 mass of 1,000 ug/m3 and more) reaches by coagulation.
DENSE_SMOKE_COARSE_SHARE = 0.7
# The recordings' site: median 938.8 hPa, quartiles 938.7-939.4 (a fleet's sensors spread wider).
SITE_PRESSURE_HPA = (938.8, 0.4)
# Clean air at the start of every session: at least this many readings (the kit's start-up and more).
LEAD_IN_ROWS = 120
CLEAN = "clean"
COOKING = "cooking"
HOT_DRY = "hot_dry"
# Fire experiments of the recordings: kind -> incident physics.
FIRE_KINDS: dict[str, IncidentKind] = {
    "wood_smouldering": IncidentKind.SMOULDERING,
    "wood_flaming": IncidentKind.FLAMING,
    "gas": IncidentKind.GAS,
    "candle": IncidentKind.CANDLE,
}
# Bad rows for loader tests, in the order they are injected: (what, the reason validation gives).
BAD_ROW_KINDS: tuple[tuple[str, str], ...] = (
    ("missing cell", Reason.MISSING_FIELD),
    ("non-numeric cell", Reason.WRONG_TYPE),
    ("value above its range", Reason.OUT_OF_RANGE),
    ("value below its range", Reason.OUT_OF_RANGE),
    ("timestamp not a number", Reason.BAD_TIMESTAMP),
)
_L = {name: j for j, name in enumerate(LATENT)}


@dataclass(frozen=True)
class Episode:
    """A stretch of one kind within a session: clean air, cooking (label 0) or a fire (label 1)."""

    kind: str
    first_row: int  # position in the file
    rows: int
    label: int


@dataclass(frozen=True)
class Session:
    """One recording session: ``CNT`` runs from 0 over its rows; a gap in ``UTC`` precedes the next."""

    environment: str
    first_row: int
    rows: int
    first_utc: int
    episodes: tuple[Episode, ...]

    @property
    def label(self) -> int:
        """1 when any fire burns in the session."""
        return int(any(e.label for e in self.episodes))

    @property
    def fire_onsets(self) -> list[int]:
        """File positions of the session's 0 -> 1 label changes (ignitions)."""
        return [e.first_row for e in self.episodes if e.label == 1]


@dataclass
class GeneratedCsv:
    """What :func:`write_kaggle_csv` wrote: sessions, and the rows made bad with the reason expected."""

    path: Path
    rows: int
    fire_share: float
    label_changes: int
    sessions: list[Session] = field(default_factory=list)
    bad_rows: dict[int, str] = field(default_factory=dict)  # row position -> expected reason


def write_kaggle_csv(path: str | Path, rows: int = 5_000, seed: int = 0, bad_rows: int = 0,
                     sessions: int | None = None, fires: int | None = None) -> GeneratedCsv:
    """Write a realistic Kaggle-format CSV of ``rows`` readings, reproducible from ``seed``.

    ``sessions`` recording sessions (default 2 to 7 by size; from 3 on, one is
    hot and dry) holding ``fires`` fire experiments (default 5: about 10 label
    changes). With ``bad_rows`` > 0 that many rows are spoiled, cycling through
    :data:`BAD_ROW_KINDS`; their positions and expected reasons are returned.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    n_sessions = sessions or int(np.clip(rows // 10_000 + 1, 2, 7))
    n_fires = fires if fires is not None else (5 if rows >= 2_000 else max(1, rows // 400))
    if rows < 4 * n_sessions + 2 * n_fires:
        raise ValueError(f"{rows} rows is too few for {n_sessions} sessions and {n_fires} fires")
    rng = np.random.default_rng(seed)
    plans = _layout(rng, rows, n_sessions, n_fires)

    blocks: list[np.ndarray] = []
    labels = np.empty(rows, dtype=np.int64)
    utc = np.empty(rows, dtype=np.int64)
    cnt = np.empty(rows, dtype=np.int64)
    written: list[Session] = []
    start, first = _FIRST_UTC, 0
    for environment, episodes in plans:
        length = sum(n for _, n in episodes)
        values, placed = _session_values(rng, environment, episodes, first)
        blocks.append(values)
        for episode in placed:
            labels[episode.first_row:episode.first_row + episode.rows] = episode.label
        utc[first:first + length] = start + np.arange(length)
        cnt[first:first + length] = np.arange(length)
        written.append(Session(environment, first, length, start, tuple(placed)))
        start += length + int(rng.uniform(600, 7_200))
        first += length

    frame = pd.DataFrame(np.vstack(blocks), columns=[CANONICAL_TO_KAGGLE[m] for m in MEASUREMENTS])
    frame.insert(0, KAGGLE_TIMESTAMP, utc)
    frame[KAGGLE_COUNTER] = cnt
    frame[KAGGLE_LABEL] = labels
    frame, spoiled = _spoil(rng, frame, bad_rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=True, index_label="")
    changes = int(np.count_nonzero(np.diff(labels)))
    return GeneratedCsv(path, rows, float(labels.mean()), changes, written, spoiled)


def _layout(rng: np.random.Generator, rows: int, n_sessions: int,
            n_fires: int) -> list[tuple[str, list[tuple[str, int]]]]:
    """Sessions as (environment, [(episode kind, rows)]), redrawn until the time split's parts hold both labels."""
    from ingest.settings import TrainSettings

    split = TrainSettings()
    cuts = (1 - split.validation_fraction - split.test_fraction, 1 - split.test_fraction)
    plan: list[tuple[str, list[tuple[str, int]]]] = []
    for _ in range(200):
        plan = _draw_layout(rng, rows, n_sessions, n_fires)
        labels = np.concatenate([np.full(n, int(kind in FIRE_KINDS)) for _, eps in plan for kind, n in eps])
        edges = [0, int(cuts[0] * rows), int(cuts[1] * rows), rows]
        test = labels[edges[2]:]
        if all(len(np.unique(labels[a:b])) == 2 for a, b in itertools.pairwise(edges)) \
                and np.any((test[1:] == 1) & (test[:-1] == 0)):
            break
    return plan


def _draw_layout(rng: np.random.Generator, rows: int, n_sessions: int,
                 n_fires: int) -> list[tuple[str, list[tuple[str, int]]]]:
    hot = n_sessions >= 3
    hot_rows = int(HOT_DRY_SHARE * rows) if hot else 0
    burning = [s for s in range(n_sessions - int(hot))]  # sessions that can hold fires
    fires_of: dict[int, int] = {s: 0 for s in burning}
    for k, s in enumerate(rng.permutation(burning).tolist() * math.ceil(n_fires / len(burning))):
        if k == n_fires:
            break
        fires_of[s] += 1
    fire_rows = _shares(rng, round(FIRE_SHARE * rows), n_fires)
    clean_counts = [fires_of[s] + 1 for s in burning]
    clean_total = rows - hot_rows - int(fire_rows.sum())
    lead = min(LEAD_IN_ROWS, max(2, clean_total // (2 * sum(clean_counts))))
    clean_rows = _shares(rng, clean_total - lead * len(burning), sum(clean_counts))
    environments = ["indoor"] + ["indoor" if rng.random() < 0.6 else "outdoor" for _ in burning[1:]]
    # Every kind of fire once (in random order) before any repeats, as the recordings' experiments.
    kinds = [kind for _ in range(math.ceil(n_fires / len(FIRE_KINDS))) for kind in rng.permutation(list(FIRE_KINDS))]
    plan: list[tuple[str, list[tuple[str, int]]]] = []
    f = c = 0
    for s in burning:
        episodes: list[tuple[str, int]] = []
        for j in range(fires_of[s] + 1):
            n = int(clean_rows[c]) + (lead if j == 0 else 0)
            c += 1
            if n:
                cooking = environments[s] == "indoor" and j > 0 and n >= 900 and rng.random() < 0.5
                if cooking:  # a meal cooked in the clean stretch: a nuisance in the middle third
                    third = n // 3
                    episodes += [(CLEAN, third), (COOKING, third), (CLEAN, n - 2 * third)]
                else:
                    episodes.append((CLEAN, n))
            if j < fires_of[s]:
                episodes.append((str(kinds[f]), int(fire_rows[f])))
                f += 1
        plan.append((environments[s], episodes))
    if hot:  # anywhere but first: the recordings start in ordinary indoor air
        plan.insert(int(rng.integers(1, len(plan) + 1)), (HOT_DRY, [(CLEAN, rows - sum(
            n for _, eps in plan for _, n in eps))]))
    else:
        plan[-1][1][-1] = (plan[-1][1][-1][0], plan[-1][1][-1][1] + rows - sum(n for _, e in plan for _, n in e))
    return plan


def _shares(rng: np.random.Generator, total: int, parts: int) -> np.ndarray:
    """``total`` rows cut into ``parts`` random lengths (0.5x-1.5x of the mean) summing to it."""
    if parts == 0:
        return np.zeros(0, dtype=np.int64)
    weights = rng.uniform(0.5, 1.5, parts)
    out = np.floor(weights / weights.sum() * total).astype(np.int64)
    out[-1] += total - out.sum()
    return out


def _session_values(rng: np.random.Generator, environment: str, episodes: list[tuple[str, int]],
                    first_row: int) -> tuple[np.ndarray, list[Episode]]:
    """Readings of one recording session (one sensor, one per second), and its episodes placed in the file."""
    length = sum(n for _, n in episodes)
    base = draw_baselines(rng, ["indoor" if environment == HOT_DRY else environment])
    compensated_quiet_air(rng, base.quiet)
    base.quiet[:, _L["pressure_hpa"]] = rng.normal(*SITE_PRESSURE_HPA)  # one site: weather moves it a little
    idx = np.zeros(length, dtype=np.int64)
    latent = base.latent(idx).copy()
    # Slow drift of temperature and humidity (a random walk per second).
    latent[:, _L["temperature_c"]] += np.cumsum(rng.normal(0.0, 0.01, length))
    latent[:, _L["humidity_pct"]] += np.cumsum(rng.normal(0.0, 0.02, length))
    if environment == HOT_DRY:
        ramp = np.linspace(0.0, 1.0, length)
        latent[:, _L["temperature_c"]] = np.interp(ramp, [0, 1], HOT_DRY_TEMPERATURE_C) + rng.normal(0, 0.3)
        latent[:, _L["humidity_pct"]] = np.interp(ramp, [0, 1], HOT_DRY_HUMIDITY_PCT) + rng.normal(0, 0.3)
    placed: list[Episode] = []
    row = 0
    for kind, n in episodes:
        incident = FIRE_KINDS.get(kind, IncidentKind.NUISANCE if kind == COOKING else None)
        if incident is not None:
            part = slice(row, row + n)
            codes = np.full(n, kind_code(incident))
            # Lit at the start of the episode, out (and the air cleared) by its end; turbulence flickers it.
            level = intensity(codes, np.arange(n, dtype=np.float64), np.full(n, float(n)))
            level *= np.exp(_smooth_noise(rng, n, FLICKER_SIGMA))
            size = np.full(n, rng.lognormal(0.0, EPISODE_SIZE_SIGMA))
            latent[part] += effect(codes, level, size)
            blend_coarse(latent[part], codes, level, size)
            # Dense smoke coagulates into larger particles: the recordings' spikes carry PM2.5 at about twice
            # PM1.0 and many NC2.5 counts, where thin smoke is sub-micron.
            dense = np.clip(np.log10(np.maximum(latent[part, _L["particle_mass"]], 1.0) / 100.0), 0.0, 1.0)
            latent[part, _L["coarse_share"]] += dense * (DENSE_SMOKE_COARSE_SHARE - latent[part, _L["coarse_share"]])
        placed.append(Episode(kind, first_row + row, n, int(kind in FIRE_KINDS)))
        row += n
    values = base.measure(rng, idx, latent)
    return report(values, np.arange(length, dtype=np.float64), draw_power_on(rng)), placed


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


__all__ = ["BAD_ROW_KINDS", "FIRE_KINDS", "FIRE_SHARE", "Episode", "GeneratedCsv", "Session", "write_kaggle_csv"]
