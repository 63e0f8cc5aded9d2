"""Memory of the stream's per-sensor state at 1,000 / 10,000 / 100,000 sensors, beside a plain-dict baseline.

    python -m bench.state_memory                       # about 1-2 minutes on 2 cores
    python -m bench.state_memory --sizes 1000 10000    # fewer sizes

**Ours** is what a PartitionWorker keeps for a partition: :class:`actors.state.PartitionState`
holding its :class:`actors.detection.DetectionEngine` (per-sensor feature history, detector and
fusion arrays on one slot table; built without a model, which keeps no per-sensor state), made by
the worker's own
``engine_factory``. It is fed readings of :class:`ingest.simulator.FleetSimulator`, one per
sensor per round, for ``--rounds`` rounds (default ``WINDOW``: every sensor's window and
every detector's arrays hold real values; the z-score's longer warm-up only gates its
opinion, not what it stores). Sensor ids are fresh strings per batch, as decoding does.

Bytes per sensor, measured three ways (plus the code's own estimate):

- **estimate**: ``PartitionState.nbytes_per_sensor()``, the accounting behind the
  ``smoke_state_bytes`` metric;
- **heap**: growth of the traced heap (``tracemalloc``; numpy reports its buffers to it)
  while the state is built, per-batch temporaries freed;
- **rss**: growth of the process's resident memory over the same build, less
  tracemalloc's own bookkeeping;
- **checkpoint**: the snapshot file as ``CheckpointStore.save_snapshot`` writes it.

**Baseline**, in the same process: what a straightforward hand-written consumer keeps for
the same information: ``{sensor_id: {...}}`` with, per sensor, a ``deque(maxlen=WINDOW - 1)``
of tuples of the windowed signals (our history), dicts of floats keyed by signal name (EWMA,
z-score mean/variance, stuck values...), and the fusion state, filled from our own export of
each sensor so the content is identical; its checkpoint is ``pickle`` of that dict. Ratios are
ours / baseline (below 1: we use less).

**Idle-sensor eviction**: ``--idle-share`` of the sensors go quiet, the others send one
more reading ``stream.idle_eviction_s`` later, and ``PartitionState.evict_idle`` moves the
quiet ones to the checkpoint store. Reported: state bytes in memory before and after
(estimate and traced heap), the snapshot and the evicted blobs in the store, and the heap
cost of as many *new* sensors arriving afterwards. Finally the snapshot is read back
through the store and must give an equal state.

Each size runs in a fresh process, so that memory freed by one size does not hide the next
one's RSS growth. Results go to ``bench/results/state_memory.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import multiprocessing
import os
import pickle
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from actors.checkpoint_store import CheckpointStore
from actors.ownership import engine_factory
from actors.state import PartitionState
from bench.machine import load_average, machine_description
from bench.tables import markdown_table
from ingest.settings import Settings, SimulatorSettings, load_settings
from ingest.simulator import FleetSimulator, SimBatch
from train.features import WINDOW, WINDOWED_SIGNALS

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "state_memory.json"
SIZES = (1_000, 10_000, 100_000)
IDLE_SHARE = 0.2  # a fifth of the fleet offline or decommissioned
T0 = 1_780_000_000.0  # event time of the first reading
NOW0 = 1_000_000.0  # wall clock of the warm-up rounds (eviction reads the wall-clock last arrival)
TOPIC, PARTITION = "bench-state", 0


# Measuring memory ------------------------------------------------------------------------


@dataclass
class MemoryReading:
    heap: int  # traced bytes
    rss: int | None  # resident bytes less tracemalloc's bookkeeping; None off Linux


def resident_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def memory_now() -> MemoryReading:
    """Traced heap and resident memory now, after a full collection (tracemalloc must be tracing)."""
    gc.collect()
    rss = resident_bytes()
    return MemoryReading(tracemalloc.get_traced_memory()[0],
                         None if rss is None else rss - tracemalloc.get_tracemalloc_memory())


def per_sensor(before: MemoryReading, after: MemoryReading, sensors: int) -> dict[str, float | None]:
    rss = None if before.rss is None or after.rss is None else (after.rss - before.rss) / sensors
    return {"heap": (after.heap - before.heap) / sensors, "rss": rss}


# Readings --------------------------------------------------------------------------------------


def simulated_rounds(sensors: int, rounds: int, seed: int = 3) -> list[SimBatch]:
    """``rounds`` batches of simulated readings, each holding every sensor once (no dropouts)."""
    config = SimulatorSettings(sensors=sensors, rate=float(sensors), seed=seed, dropout_probability=0.0)
    return list(itertools.islice(FleetSimulator(config, start_time=T0).batches(batch_size=sensors), rounds))


def wire_ids(sensor_ids: list[str]) -> list[str]:
    """Fresh string objects, as decoding each message makes: the state then owns its keys."""
    return [s.encode().decode() for s in sensor_ids]


def feed(state: PartitionState, batch: SimBatch, now: float, store: CheckpointStore) -> None:
    # Arrivals at the wall clock of the round: eviction reads the last arrival.
    state.process(wire_ids(batch.sensor_ids), batch.timestamps, batch.values, np.full(len(batch), now), store)


# The baseline: a hand-written consumer's dict of Python objects --------------------------------


def baseline_state(state: PartitionState) -> dict[str, dict[str, Any]]:
    """The same information as ``state``, the way a hand-written consumer would hold it.

    ``{sensor_id: record}``, each record with its own id string, a ``deque`` of recent
    readings (tuples of the windowed signals) and dicts of floats keyed by signal name.
    Filled sensor by sensor from our arrays, so that few temporaries are alive at once
    (a column-wise fill left the heap fragmented and inflated the baseline's RSS).
    """
    engine = state.engine
    features = engine.features
    # Per detector and fusion kind: its arrays; stateless detectors (thresholds, model) left out.
    detectors = [(d.name, d.state.arrays, tuple(getattr(d, "names", ()))) for d in engine.detectors
                 if d.state.spec]
    fusions = [(kind, f.state.arrays) for kind, f in engine.fusions.items()]
    out: dict[str, dict[str, Any]] = {}
    for sensor_id, slot in engine.slots.items():
        record: dict[str, Any] = {
            "recent": deque(map(tuple, features.history[slot].tolist()), maxlen=WINDOW - 1),
            "last_timestamp": float(features.last_timestamp[slot]),
            "count": int(features.count[slot]),
            "ewma": dict(zip(WINDOWED_SIGNALS, features.ewma[slot].tolist(), strict=True)),
        }
        for name, arrays, names in detectors:
            record[name] = {field: _keyed(array[slot].tolist(), names) for field, array in arrays.items()}
        record["fusion"] = {kind: {field: array[slot].item() for field, array in arrays.items()}
                            for kind, arrays in fusions}
        out[sensor_id.encode().decode()] = record
    return out


def _keyed(value: Any, names: tuple[str, ...]) -> Any:
    """A per-signal list as ``{signal: value}``, the way one would write it by hand."""
    if isinstance(value, list) and names and len(value) == len(names):
        return dict(zip(names, value, strict=True))
    return value


# The checkpoint store -----------------------------------------------------------------------------


def file_bytes(store: CheckpointStore, path: str) -> int:
    info = store.fs.get_file_info(path)
    return int(info.size) if info.type == pafs.FileType.File else 0


def tree_bytes(store: CheckpointStore, path: str) -> tuple[int, int]:
    """Files and bytes under ``path`` in the store."""
    infos = store.fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    sizes = [int(i.size) for i in infos if i.type == pafs.FileType.File]
    return len(sizes), sum(sizes)


def same_data(a: Any, b: Any) -> bool:
    """Deep equality of snapshot data, NaN equal to NaN, arrays by content."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_data(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def round_trip(store: CheckpointStore, make_engine: Callable[[dict[str, Any] | None], Any]
               ) -> tuple[PartitionState, bool]:
    """The state restored from the store's snapshot, and whether it snapshots back to the same data."""
    loaded = store.load_snapshot(TOPIC, PARTITION)
    if loaded is None:
        raise FileNotFoundError(f"no snapshot at {store.snapshot_path(TOPIC, PARTITION)}")
    restored = PartitionState.from_snapshot(loaded, make_engine)
    loaded.pop("format")  # the store's envelope, not part of the state
    return restored, same_data(loaded, restored.snapshot())


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """tracemalloc on for the block (left alone if someone else already traces)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


# One size -------------------------------------------------------------------------------------------
#
# Two phases, each in a fresh process when run from main(): ours (build, snapshot, eviction), then
# the baseline, filled from the snapshot ours wrote. Splitting them keeps the baseline's RSS growth
# free of what ours allocated and freed, and keeps the expensive eviction untraced by the baseline.


def measure_ours(sensors: int, store_dir: str | Path, *, rounds: int = WINDOW, idle_share: float = IDLE_SHARE,
                 settings: Settings | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Our state's bytes per sensor and the effect of eviction; leaves the warmed-up snapshot in
    ``store_dir/snapshot`` for :func:`measure_baseline`."""
    if rounds < 2:
        raise ValueError("rounds must be at least 2 (one round of history is not a warmed-up state)")
    settings = settings or load_settings(environ={})
    make_engine = engine_factory(settings, None)
    snapshots = CheckpointStore(str(Path(store_dir) / "snapshot"))
    store = CheckpointStore(str(Path(store_dir) / "running"))  # what the worker's store holds after eviction
    idle_s = settings.stream.idle_eviction_s
    started = time.perf_counter()

    def step(what: str) -> None:
        progress(f"state_memory: {sensors:,} sensors, ours: {what} ({time.perf_counter() - started:.1f} s)")

    batches = simulated_rounds(sensors, rounds + 1)
    warm_up, last_round = batches[:rounds], batches[rounds]
    # Pay one-off costs (lazy imports, numpy's caches) outside the measured region.
    scratch = PartitionState(TOPIC, PARTITION, make_engine(None))
    feed(scratch, warm_up[0].slice(0, 2), NOW0, store)
    del scratch

    with tracing():
        empty = memory_now()
        state = PartitionState(TOPIC, PARTITION, make_engine(None))
        for batch in warm_up:
            feed(state, batch, NOW0, store)
        built = memory_now()
        held = state.sensors()
        growth = per_sensor(empty, built, held)
        estimate = state.nbytes_per_sensor()
        step(f"built from {rounds} rounds of readings")

        captured = time.perf_counter()
        snapshot = state.snapshot()
        capture_s = time.perf_counter() - captured
        snapshots.save_snapshot(TOPIC, PARTITION, snapshot)
        del snapshot
        snapshot_bytes = file_bytes(snapshots, snapshots.snapshot_path(TOPIC, PARTITION))
        step("wrote the snapshot")

        # The quiet share is idle for idle_eviction_s (wall clock) while the others keep talking.
        quiet = round(held * idle_share)
        now = NOW0 + idle_s + 1.0
        feed(state, last_round.slice(quiet, len(last_round)), now, store)
        before = memory_now()
        estimate_before = state.sensors() * state.nbytes_per_sensor()
        evicting = time.perf_counter()
        evicted = state.evict_idle(now, idle_s, store)
        evict_s = time.perf_counter() - evicting
        after = memory_now()
        estimate_after = state.sensors() * state.nbytes_per_sensor()
        in_memory_after = state.sensors()
        store.save_snapshot(TOPIC, PARTITION, state.snapshot())
        step(f"evicted {evicted:,} idle sensors")

        # As many new sensors arrive: they take the freed slots.
        arriving = last_round.slice(0, quiet)
        feed(state, SimBatch([f"new-{s}" for s in arriving.sensor_ids], arriving.timestamps + 1.0, arriving.values),
             now + 1.0, store)
        with_newcomers = memory_now()
    blobs, blob_bytes = tree_bytes(store, store.path(TOPIC, f"partition-{PARTITION:04d}", "evicted"))
    _, store_bytes = tree_bytes(store, store.path(TOPIC))
    return {
        "sensors": held,
        "readings": sum(len(b) for b in batches),
        "ours": {
            "estimate_bytes_per_sensor": round(estimate),
            "heap_bytes_per_sensor": round(growth["heap"]),
            "rss_bytes_per_sensor": _rounded(growth["rss"]),
            "checkpoint_bytes_per_sensor": round(snapshot_bytes / held),
            "snapshot_capture_s": round(capture_s, 3),
        },
        "eviction": {
            "idle_s": idle_s,
            "evicted": evicted,
            "sensors_in_memory_before": held,
            "sensors_in_memory_after": in_memory_after,
            "estimate_bytes_before": round(estimate_before),
            "estimate_bytes_after": round(estimate_after),
            "heap_bytes_before": before.heap - empty.heap,
            "heap_bytes_after": after.heap - empty.heap,
            "evict_s_traced": round(evict_s, 2),
            "store_snapshot_bytes_before": snapshot_bytes,
            "store_snapshot_bytes_after": file_bytes(store, store.snapshot_path(TOPIC, PARTITION)),
            "store_evicted_blobs": blobs,
            "store_evicted_bytes": blob_bytes,
            "store_bytes_after": store_bytes,
            "new_sensors_after": quiet,
            "heap_bytes_per_new_sensor": round((with_newcomers.heap - after.heap) / max(quiet, 1)),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def measure_baseline(store_dir: str | Path, *, settings: Settings | None = None,
                     progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The dict-of-objects baseline holding what the snapshot in ``store_dir/snapshot`` holds."""
    settings = settings or load_settings(environ={})
    started = time.perf_counter()
    state, equal = round_trip(CheckpointStore(str(Path(store_dir) / "snapshot")), engine_factory(settings, None))
    held = state.sensors()
    progress(f"state_memory: {held:,} sensors, baseline: restored our snapshot, round trip "
             f"{'equal' if equal else 'DIFFERENT'} ({time.perf_counter() - started:.1f} s)")
    with tracing():
        empty = memory_now()
        baseline = baseline_state(state)
        filled = memory_now()
    growth = per_sensor(empty, filled, len(baseline))
    checkpoint = len(pickle.dumps(baseline, protocol=5))
    progress(f"state_memory: {held:,} sensors, baseline: built ({time.perf_counter() - started:.1f} s)")
    return {
        "snapshot_round_trip_equal": equal,
        "baseline": {
            "heap_bytes_per_sensor": round(growth["heap"]),
            "rss_bytes_per_sensor": _rounded(growth["rss"]),
            "checkpoint_bytes_per_sensor": round(checkpoint / held),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def measure(sensors: int, store_dir: str | Path, *, rounds: int = WINDOW, idle_share: float = IDLE_SHARE,
            fresh_processes: bool = False, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """All figures for one fleet size (see the module docstring); the stores go under ``store_dir``."""
    if fresh_processes:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            ours = pool.submit(measure_ours, sensors, store_dir, rounds=rounds, idle_share=idle_share,
                               progress=_print_now).result()
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            theirs = pool.submit(measure_baseline, store_dir, progress=_print_now).result()
    else:
        ours = measure_ours(sensors, store_dir, rounds=rounds, idle_share=idle_share, progress=progress)
        theirs = measure_baseline(store_dir, progress=progress)
    o, b = ours["ours"], theirs["baseline"]

    def ratio(key: str) -> float | None:
        return round(o[key] / b[key], 3) if o[key] is not None and b[key] else None

    return {
        "sensors": ours["sensors"], "readings": ours["readings"], "ours": o, "baseline": b,
        "ratio": {"heap": ratio("heap_bytes_per_sensor"), "rss": ratio("rss_bytes_per_sensor"),
                  "checkpoint": ratio("checkpoint_bytes_per_sensor")},
        "eviction": ours["eviction"],
        "snapshot_round_trip_equal": theirs["snapshot_round_trip_equal"],
        "seconds": round(ours["seconds"] + theirs["seconds"], 1),
    }


def _print_now(line: str) -> None:
    print(line, flush=True)


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


# Report -----------------------------------------------------------------------------------------------


def tables(figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    per_sensor_rows, eviction_rows = [], []
    for f in figures.values():
        o, b, r, e = f["ours"], f["baseline"], f["ratio"], f["eviction"]
        per_sensor_rows.append([
            f["sensors"], o["estimate_bytes_per_sensor"], o["heap_bytes_per_sensor"], o["rss_bytes_per_sensor"],
            o["checkpoint_bytes_per_sensor"], b["heap_bytes_per_sensor"], b["rss_bytes_per_sensor"],
            b["checkpoint_bytes_per_sensor"], r["heap"], r["rss"], r["checkpoint"]])
        mb = 1024 * 1024
        eviction_rows.append([
            f["sensors"], e["evicted"], e["estimate_bytes_before"] / mb, e["estimate_bytes_after"] / mb,
            e["heap_bytes_before"] / mb, e["heap_bytes_after"] / mb, e["heap_bytes_per_new_sensor"],
            e["store_snapshot_bytes_before"] / mb, e["store_snapshot_bytes_after"] / mb,
            e["store_evicted_bytes"] / mb, e["store_evicted_blobs"], f["snapshot_round_trip_equal"]])
    return {
        "Bytes per sensor (ours beside the dict-of-objects baseline)": {
            "columns": ["sensors", "ours estimate", "ours heap", "ours RSS", "ours checkpoint", "baseline heap",
                        "baseline RSS", "baseline checkpoint", "ratio heap", "ratio RSS", "ratio checkpoint"],
            "rows": per_sensor_rows,
        },
        "Idle-sensor eviction (MiB unless noted)": {
            "columns": ["sensors", "evicted", "estimate before", "estimate after", "heap before", "heap after",
                        "heap B per new sensor after", "snapshot before", "snapshot after", "evicted blobs",
                        "blob files", "snapshot round trip equal"],
            "rows": eviction_rows,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="fleet sizes (sensors)")
    parser.add_argument("--rounds", type=int, default=WINDOW, help="readings per sensor before measuring")
    parser.add_argument("--idle-share", type=float, default=IDLE_SHARE, help="share of sensors that go idle")
    args = parser.parse_args(argv)
    settings = load_settings(environ={})
    result: dict[str, Any] = {
        "command": "python -m bench.state_memory" + (f" {' '.join(argv)}" if argv else ""),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "machine": machine_description(),
            "load_average_at_start": load_average(),
            "ours": "actors.state.PartitionState: actors.detection.DetectionEngine with its feature history "
                    "(engine_factory of the worker, no model), one partition",
            "baseline": "dict sensor_id -> dict: deque(maxlen=WINDOW-1) of tuples of the windowed signals, dicts "
                        "of floats keyed by signal name, fusion fields; same content; checkpoint = pickle of it",
            "readings": f"ingest.simulator.FleetSimulator (seed 3, no dropouts), {args.rounds} rounds of one "
                        "reading per sensor",
            "measures": "estimate = PartitionState.nbytes_per_sensor(); heap = tracemalloc growth; RSS = resident "
                        "growth less tracemalloc's own memory; checkpoint = snapshot file as CheckpointStore writes it",
            "eviction": f"{args.idle_share:.0%} of sensors idle for stream.idle_eviction_s "
                        f"({settings.stream.idle_eviction_s:g} s), then PartitionState.evict_idle; then as many new "
                        "sensors arrive",
            "isolation": "each size, ours then the baseline, in a fresh process",
        },
        "figures": {},
    }
    for sensors in args.sizes:
        try:
            with TemporaryDirectory(prefix="bench-state-") as tmp:
                result["figures"][str(sensors)] = measure(sensors, tmp, rounds=args.rounds,
                                                          idle_share=args.idle_share, fresh_processes=True)
        except Exception as err:  # one clear line; the recorded results are left as they were
            print(f"bench.state_memory: {sensors:,} sensors failed: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
    result["setup"]["load_average_at_end"] = load_average()
    result["tables"] = tables(result["figures"])
    for title, table in result["tables"].items():
        print(f"\n{title}\n")
        print("\n".join(markdown_table(table["columns"], table["rows"])))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
