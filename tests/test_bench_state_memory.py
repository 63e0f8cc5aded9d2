"""bench.state_memory at a tiny fleet: the figures are consistent with each other (no timing)."""

from __future__ import annotations

import json

import pytest

from bench.state_memory import measure, tables

SENSORS = 200
IDLE_SHARE = 0.2


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return measure(SENSORS, tmp_path_factory.mktemp("state-memory"), idle_share=IDLE_SHARE, progress=lambda _: None)


def test_bytes_per_sensor_are_positive_for_ours_and_the_baseline(figures: dict) -> None:
    assert figures["sensors"] == SENSORS
    ours, baseline = figures["ours"], figures["baseline"]
    for key in ("estimate_bytes_per_sensor", "heap_bytes_per_sensor", "checkpoint_bytes_per_sensor"):
        assert ours[key] > 0, key
    for key in ("heap_bytes_per_sensor", "checkpoint_bytes_per_sensor"):
        assert baseline[key] > 0, key
    # The heap holds at least what the code accounts for (arrays grow by doubling, so it holds more).
    assert ours["heap_bytes_per_sensor"] >= ours["estimate_bytes_per_sensor"] * 0.9
    assert figures["ratio"]["heap"] == pytest.approx(
        ours["heap_bytes_per_sensor"] / baseline["heap_bytes_per_sensor"], abs=0.001)


def test_eviction_moves_idle_sensors_to_the_store(figures: dict) -> None:
    eviction = figures["eviction"]
    idle = round(SENSORS * IDLE_SHARE)
    assert eviction["evicted"] == idle
    assert eviction["sensors_in_memory_after"] == SENSORS - idle
    assert eviction["estimate_bytes_after"] < eviction["estimate_bytes_before"]
    assert eviction["store_evicted_blobs"] == idle and eviction["store_evicted_bytes"] > 0
    assert eviction["store_snapshot_bytes_after"] < eviction["store_snapshot_bytes_before"]
    assert eviction["store_bytes_after"] >= eviction["store_snapshot_bytes_after"] + eviction["store_evicted_bytes"]
    # The traced heap does not shrink on eviction (slot arrays keep their capacity, dicts their
    # tables), but the freed slots are reused: a new sensor then costs far less than the first ones.
    assert eviction["heap_bytes_per_new_sensor"] < figures["ours"]["heap_bytes_per_sensor"] / 2


def test_snapshot_read_back_through_the_store_is_the_same_state(figures: dict) -> None:
    assert figures["snapshot_round_trip_equal"] is True


def test_tables_cover_every_size_and_the_result_is_json(figures: dict) -> None:
    rendered = tables({str(SENSORS): figures})
    for table in rendered.values():
        assert len(table["rows"]) == 1
        assert len(table["rows"][0]) == len(table["columns"])
    json.dumps({"figures": figures, "tables": rendered})
