"""Partition state: assignment planning, the checkpoint store, restore == uninterrupted, eviction.

The restore test runs two real :class:`StreamLoop` instances (the code inside a
PartitionWorker actor) against the real embedded broker, in this process.
"""

from __future__ import annotations

import doctest
import random
import shutil
import time

import numpy as np
import pytest

import actors.supervisor
from actors.checkpoint_store import CheckpointStore
from actors.ownership import engine_factory
from actors.state import PartitionState
from actors.supervisor import plan_assignment
from actors.worker import StreamLoop
from ingest.validation import validate_messages
from tests.stream_support import produce, reading


def test_supervisor_doctests() -> None:
    result = doctest.testmod(actors.supervisor)
    assert result.attempted > 0 and result.failed == 0


def test_plan_assignment_owns_each_partition_once_balanced_and_moves_little() -> None:
    rng = random.Random(7)
    for _ in range(300):
        partitions = list(range(rng.randint(1, 24)))
        workers = [f"w{i}" for i in range(rng.randint(1, 6))]
        current = {w: [] for w in workers}
        for p in partitions:
            if rng.random() < 0.7:
                current[rng.choice(workers)].append(p)
        plan = plan_assignment(partitions, current)
        owned = sorted(p for ps in plan.values() for p in ps)
        assert owned == partitions
        sizes = [len(ps) for ps in plan.values()]
        assert max(sizes) - min(sizes) <= 1
        # A worker never loses a partition while it is at or under its fair share.
        for w in workers:
            share = len(partitions) // len(workers)
            kept = set(current[w]) & set(plan[w])
            assert len(kept) >= min(len(current[w]), share)


def test_checkpoint_store_writes_atomically_and_reads_back(tmp_path) -> None:
    store = CheckpointStore(str(tmp_path / "ck"))
    store.save_snapshot("t", 3, {"next_offset": 10, "x": np.arange(3)})
    store.save_snapshot("t", 3, {"next_offset": 20, "x": np.arange(4)})
    snap = store.load_snapshot("t", 3)
    assert snap["next_offset"] == 20 and snap["x"].tolist() == [0, 1, 2, 3]
    assert store.load_snapshot("t", 4) is None
    leftovers = [p.name for p in (tmp_path / "ck").rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    uri_store = CheckpointStore(f"file://{tmp_path}/uri")
    uri_store.save_evicted("t", 0, "s:1", {"a": 1})
    assert uri_store.load_evicted("t", 0, "s:1") == {"a": 1}


def _run_until_caught_up(loop: StreamLoop, targets: dict[int, int], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        loop.step()
        if all((loop.states[p].next_offset or 0) >= end for p, end in targets.items()):
            return
    raise AssertionError(f"loop did not reach {targets}: {loop.status()['partitions']}")


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    from tests.stream_support import consume_all

    ends: dict[int, int] = {}
    for r in consume_all(bootstrap, topic, quiet_s=1.0):
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


def _assert_same_state(a: PartitionState, b: PartitionState) -> None:
    sa, sb = a.snapshot(), b.snapshot()
    assert sa["next_offset"] == sb["next_offset"]
    # The engine's snapshot holds every sensor's whole state (feature history, detectors, fusion),
    # sensors in sorted order.
    assert sa["engine"]["sensors"], "the engine holds no per-sensor state: nothing was compared"
    assert any(c > 0 for c in sa["engine"]["features"]["count"]), "no feature history was compared"
    assert _deep_equal(sa["engine"], sb["engine"]), "engine state differs"


def _deep_equal(a: object, b: object) -> bool:
    """Equality of nested plain data where NaN equals NaN (unset detector state is NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def test_state_restored_from_checkpoint_equals_uninterrupted_run(settings, tmp_path) -> None:
    bootstrap = settings.kafka.bootstrap_servers
    t0 = 1_780_000_000.0
    sensors = [f"st-{i:02d}" for i in range(30)]
    first = [(s.encode(), reading(s, t0 + i, i)) for i in range(20) for s in sensors]
    second = [(s.encode(), reading(s, t0 + 20 + i, i, pm2_5_ugm3=3.0 + i)) for i in range(20) for s in sensors]
    produce(bootstrap, settings.kafka.topic, first)
    ends = _ends(bootstrap, settings.kafka.topic)

    uninterrupted = StreamLoop(settings, bootstrap, "uninterrupted")
    try:
        uninterrupted.set_partitions(sorted(ends))
        _run_until_caught_up(uninterrupted, ends)
        uninterrupted.checkpoint()
        # The "crashed" owner's successor starts from a copy of the checkpoint store.
        shutil.copytree(settings.stream.checkpoint_dir, tmp_path / "restored-ck")
        other = settings.model_copy(update={"stream": settings.stream.model_copy(update={
            "checkpoint_dir": str(tmp_path / "restored-ck"), "lake_dir": str(tmp_path / "restored-lake")})})
        restored = StreamLoop(other, bootstrap, "restored")
        try:
            restored.set_partitions(sorted(ends))
            for p in ends:
                _assert_same_state(uninterrupted.states[p], restored.states[p])
            produce(bootstrap, settings.kafka.topic, second)
            ends = _ends(bootstrap, settings.kafka.topic)
            _run_until_caught_up(uninterrupted, ends)
            _run_until_caught_up(restored, ends)
            for p in ends:
                _assert_same_state(uninterrupted.states[p], restored.states[p])
            assert sum(s.sensors() for s in restored.states.values()) == len(sensors)
        finally:
            restored.shutdown()
    finally:
        uninterrupted.shutdown()


def test_idle_sensors_are_evicted_to_the_store_and_restored_on_their_next_reading(settings, tmp_path) -> None:
    store = CheckpointStore(str(tmp_path / "ck"))
    make_engine = engine_factory(settings, None)
    state = PartitionState("t", 0, make_engine(None))
    twin = PartitionState("t", 0, make_engine(None))  # never evicts
    t0 = 1_780_000_000.0

    def feed(target: PartitionState, step: int, now: float):
        raws = [reading(f"ev-{k}", t0 + step, step) for k in range(5)]
        batch = validate_messages(raws)
        return target.process(batch.sensor_ids, batch.timestamps, batch.values, np.full(len(batch), now), store)

    for step in range(12):
        feed(state, step, now=100.0)
        feed(twin, step, now=100.0)
    per_sensor = state.nbytes_per_sensor()
    assert per_sensor > 0
    assert state.evict_idle(now=200.0, idle_s=50.0, store=store) == 5
    assert state.sensors() == 0 and len(state.evicted) == 5
    assert store.load_evicted("t", 0, "ev-3") is not None
    features, _ = feed(state, 12, now=300.0)
    expected, _ = feed(twin, 12, now=300.0)
    np.testing.assert_array_equal(features, expected)  # windows continue as if never evicted
    assert state.sensors() == 5 and not state.evicted
    state.after_snapshot(store, state.take_restored())  # once a snapshot holds them, their blobs go
    assert store.load_evicted("t", 0, "ev-3") is None


def test_eviction_takes_at_most_the_limit_longest_idle_first(settings, tmp_path) -> None:
    store = CheckpointStore(str(tmp_path / "ck"))
    state = PartitionState("t", 0, engine_factory(settings, None)(None))
    for k in range(10):  # sensor k last arrived at wall clock 100 + k
        batch = validate_messages([reading(f"ev-{k}", 1_780_000_000.0, k)])
        state.process(batch.sensor_ids, batch.timestamps, batch.values, np.full(len(batch), 100.0 + k), store)
    assert state.evict_idle(now=200.0, idle_s=50.0, store=store, limit=4) == 4
    assert state.evicted == {"ev-0", "ev-1", "ev-2", "ev-3"}
    assert state.evict_idle(now=200.0, idle_s=50.0, store=store, limit=4) == 4
    assert state.evict_idle(now=200.0, idle_s=50.0, store=store, limit=4) == 2
    assert state.sensors() == 0 and len(state.evicted) == 10


def test_time_without_an_owner_is_not_idleness(settings, tmp_path) -> None:
    store = CheckpointStore(str(tmp_path / "ck"))
    make_engine = engine_factory(settings, None)
    state = PartitionState("t", 0, make_engine(None))
    batch = validate_messages([reading(f"ow-{k}", 1_780_000_000.0, k) for k in range(3)])
    state.process(batch.sensor_ids, batch.timestamps, batch.values, np.full(len(batch), 100.0), store)
    # Restored an hour later (a long stop): nobody is evicted until idle_s after the restore.
    restored = PartitionState.from_snapshot(state.snapshot(), make_engine, restored_at=3_700.0)
    assert restored.evict_idle(now=3_700.0 + 599.0, idle_s=600.0, store=store) == 0
    assert restored.evict_idle(now=3_700.0 + 600.0, idle_s=600.0, store=store) == 3
    # Without restored_at the snapshot's own times stand (what bench.state_memory compares).
    plain = PartitionState.from_snapshot(state.snapshot(), make_engine)
    assert plain.evict_idle(now=3_700.0, idle_s=600.0, store=store) == 3


@pytest.mark.parametrize("n", [10_000])
def test_bytes_of_state_per_sensor_are_bounded(settings, n: int) -> None:
    """Report (and bound) the in-memory bytes per sensor at 10,000 sensors."""
    make_engine = engine_factory(settings, None)
    state = PartitionState("t", 0, make_engine(None))
    raws = [reading(f"b-{k:05d}", 1_780_000_000.0, k) for k in range(n)]
    batch = validate_messages(raws)
    store = CheckpointStore(str(settings.stream.checkpoint_dir))
    state.process(batch.sensor_ids, batch.timestamps, batch.values, batch.timestamps, store)
    assert state.sensors() == n
    per_sensor = state.nbytes_per_sensor()
    print(f"state bytes per sensor at {n} sensors: {per_sensor}")
    assert 0 < per_sensor < 16_384


def test_a_failed_batch_is_replayed_from_the_snapshot_never_half_applied(settings, tmp_path) -> None:
    """A batch that fails half-way (features updated, engine raised) must leave no trace."""
    bootstrap = settings.kafka.bootstrap_servers
    sensors = [f"fx-{i:02d}" for i in range(30)]
    produce(bootstrap, settings.kafka.topic,
            [(s.encode(), reading(s, 1_780_000_000.0 + i, i)) for i in range(20) for s in sensors])
    ends = _ends(bootstrap, settings.kafka.topic)
    small = {"poll_max_records": 40, "checkpoint_every_messages": 40}
    faulty_settings = settings.model_copy(update={"stream": settings.stream.model_copy(update=small)})
    # Its own group too: Kafka's committed offsets are a restore source when there is no snapshot.
    clean_settings = settings.model_copy(update={
        "stream": settings.stream.model_copy(update=small | {
            "checkpoint_dir": str(tmp_path / "clean-ck"), "lake_dir": str(tmp_path / "clean-lake")}),
        "kafka": settings.kafka.model_copy(update={"group_id": f"{settings.kafka.group_id}-clean"})})
    faulty, clean = StreamLoop(faulty_settings, bootstrap, "faulty"), StreamLoop(clean_settings, bootstrap, "clean")
    try:
        faulty.set_partitions(sorted(ends))
        clean.set_partitions(sorted(ends))
        _run_until_caught_up(clean, ends)
        # Fail the third engine call of partition 0, after its features were already computed.
        victim = next(iter(faulty.states.values()))
        calls = {"n": 0}
        real_process = victim.engine.process

        def flaky(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected failure")
            return real_process(*args, **kwargs)

        victim.engine.process = flaky
        deadline = time.monotonic() + 60
        while not all((faulty.states[p].next_offset or 0) >= end for p, end in ends.items()):
            faulty.run_once()
            assert time.monotonic() < deadline, faulty.status()
        assert faulty.totals["errors"] == 1 and calls["n"] >= 3
        for p in ends:
            _assert_same_state(clean.states[p], faulty.states[p])
    finally:
        clean.shutdown()
        faulty.shutdown()
    from tests.stream_support import lake_rows

    lake = lake_rows(faulty_settings)
    assert len(lake) == sum(ends.values()) and not lake.duplicated(["kafka_partition", "kafka_offset"]).any()


def test_stream_lake_files_have_the_column_types_of_a_dataframe_write(tmp_path) -> None:
    """The stream builds its lake rows as Arrow arrays; files it wrote before (through pandas) and
    files the loader writes must still read together, so the types must match exactly."""
    import pyarrow as pa

    from actors.sinks import LakeSink
    from ingest.lake import read_lake, write_lake_file
    from train.features import FEATURE_NAMES

    sink = LakeSink(str(tmp_path), "readings")
    part = {"offsets": np.arange(3), "sensor_ids": ["a", "b", "a"],
            "timestamps": np.array([1.78e9, 1.78e9 + 1, 1.78e9 + 2]),
            "arrival": np.full(3, 1.78e9 + 3), "features": np.random.default_rng(0).random((3, len(FEATURE_NAMES))),
            "processed_at": 1.78e9 + 4}
    table = sink.table(2, 1, [part])
    through_pandas = pa.Table.from_pandas(table.to_pandas(), preserve_index=False)
    assert table.schema.remove_metadata() == through_pandas.schema.remove_metadata()
    assert table.column("kafka_topic").to_pylist() == ["readings"] * 3
    assert table.column("kafka_partition").to_pylist() == [2] * 3
    write_lake_file(str(tmp_path), "p0002-000000000000-000000000002", table)
    older = table.to_pandas().assign(kafka_offset=[10, 11, 12])
    write_lake_file(str(tmp_path), "p0002-000000000010-000000000012", older)
    assert sorted(read_lake(str(tmp_path))["kafka_offset"]) == [0, 1, 2, 10, 11, 12]


def test_checkpoints_written_before_the_history_joined_the_engine_still_restore(settings, tmp_path) -> None:
    """A snapshot (and an evicted sensor) whose feature history sits beside the engine state."""
    store = CheckpointStore(str(tmp_path / "ck"))
    make_engine = engine_factory(settings, None)
    state = PartitionState("t", 0, make_engine(None), next_offset=12)
    batch = validate_messages([reading(f"old-{k}", 1_780_000_000.0 + k, k) for k in range(4)])
    state.process(batch.sensor_ids, batch.timestamps, batch.values, np.full(len(batch), 100.0), store)
    current = state.snapshot()
    legacy = {k: v for k, v in current.items() if k != "engine"}
    engine_part = {k: v for k, v in current["engine"].items() if k != "features"}
    legacy["engine"] = {**engine_part, "format": 2}
    legacy["features"] = {"sensors": current["engine"]["sensors"],
                          **{k: np.asarray(v) for k, v in current["engine"]["features"].items()}}
    restored = PartitionState.from_snapshot(legacy, make_engine)
    assert _deep_equal(restored.snapshot(), current)
    # An evicted sensor as it was stored then: {"features": ..., "engine": ...}.
    data = state.engine.evict("old-2")
    store.save_evicted("t", 0, "old-2", {"features": data["features"],
                                         "engine": {k: v for k, v in data.items() if k != "features"}})
    state.evicted.add("old-2")
    state.process(["old-2"], np.array([1_780_000_010.0]), batch.values[:1], np.array([110.0]), store)
    assert state.engine.export_sensor("old-2")["features"]["count"] == data["features"]["count"] + 1
