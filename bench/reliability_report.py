"""Render RELIABILITY.md: each guarantee, the tests that prove it, and the figures of a recorded run.

The reliability scenarios are tests. Run with ``--reliability-out``, they write what they
measured to a JSON file (see ``reliability_record`` in ``tests/conftest.py``); this script
turns that file into RELIABILITY.md, so the document quotes a run instead of typed numbers.

    python -m pytest --full tests/test_*_reliability.py ... --reliability-out bench/reliability.json
    python -m bench.reliability_report                      # bench/reliability.json -> RELIABILITY.md

``make reliability`` does both with the full scenarios (about 30 minutes on 2 cores).
A scenario measured in several sizes is recorded as ``name[short]`` and ``name[full]``;
its figures get one column per size.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.tables import format_cell, markdown_table

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "bench" / "reliability.json"
DOCUMENT = ROOT / "RELIABILITY.md"
NOT_RECORDED = "not recorded"

# A figure is read from a scenario's record by a dotted path, or computed by a function of it.
Reader = str | Callable[[dict], object]


@dataclass(frozen=True)
class Figures:
    """Rows of figures from one or more recorded scenarios (one column each)."""

    scenarios: tuple[str, ...]
    rows: tuple[tuple[str, Reader], ...]


@dataclass(frozen=True)
class Guarantee:
    title: str
    promise: str
    tests: tuple[str, ...]  # "tests/<file>.py::<function>"
    figures: Figures | None = None
    limits: str = ""


def _soak_worst(key: str) -> Callable[[dict], object]:
    return lambda record: max(w[key] for w in record["workers"].values())


def _takeover_worst(key: str) -> Callable[[dict], object]:
    return lambda record: max(t[key] for t in record["takeovers"] if key in t)


GUARANTEES: tuple[Guarantee, ...] = (
    Guarantee(
        "A worker process killed mid-stream loses nothing and duplicates nothing",
        "When a partition worker dies (its process killed with SIGKILL, or the actor killed by Ray), "
        "the supervisor starts a replacement, which restores the last checkpoint and seeks to its "
        "offset. Every input offset then appears exactly once in the lake or the dead-letter topic, "
        "and no alert_id is published twice, because outputs are keyed by partition and offset and "
        "alert ids are deterministic.",
        ("tests/test_actors_reliability.py::test_kill_9_of_a_worker_process_loses_nothing_and_recovers",
         "tests/test_actors_recovery.py::test_worker_kill_then_node_loss_keep_outputs_exactly_once"),
        Figures(("stream.kill9_worker_process", "stream.ray_kill_worker"), (
            ("readings sent", "readings"),
            ("workers killed", lambda r: r.get("kills", 1)),
            ("lost", "lost"),
            ("duplicated in the lake", "duplicated"),
            ("duplicate alerts", "duplicate_alerts"),
            ("partitions read again after (s, worst)",
             lambda r: _takeover_worst("resumed_s")(r) if "takeovers" in r else r["resumed_s"]),
            ("supervisor settled after (s, worst)",
             lambda r: _takeover_worst("reassigned_s")(r) if "takeovers" in r else r["reassigned_s"]),
            ("lag back to zero after the input ended (s)", "lag_zero_after_input_s"),
        )),
        "Input is at-least-once: the replacement reprocesses readings since the last checkpoint. "
        "Outputs are deduplicated (lake files keyed by first offset, a scan of the alerts and "
        "dead-letter topics from the snapshot's recorded positions), so the replay is invisible "
        "downstream; it costs the time to reprocess, shown as the recovery times above.",
    ),
    Guarantee(
        "A Ray node removed mid-stream: its partitions move to the survivors",
        "When a node leaves the cluster, the workers on it are replaced on surviving nodes and the "
        "partitions rebalanced, with the same exactly-once outputs as above.",
        ("tests/test_actors_recovery.py::test_worker_kill_then_node_loss_keep_outputs_exactly_once",),
        Figures(("stream.node_removal",), (
            ("readings sent", "readings"), ("lost", "lost"), ("duplicated in the lake", "duplicated"),
            ("duplicate alerts", "duplicate_alerts"), ("Ray reports the worker dead after (s)", "ray_reports_dead_s"),
            ("partitions read again after (s)", "resumed_s"), ("supervisor settled after (s)", "reassigned_s"),
        )),
    ),
    Guarantee(
        "Restored state equals the state of an uninterrupted run",
        "A checkpoint holds the detectors' per-sensor state and the next offset, written atomically; "
        "restoring it and reading on gives the same state as never having stopped. A batch that fails "
        "half-way is replayed from the snapshot, never half applied.",
        ("tests/test_actors_state.py::test_state_restored_from_checkpoint_equals_uninterrupted_run",
         "tests/test_actors_state.py::test_a_failed_batch_is_replayed_from_the_snapshot_never_half_applied"),
    ),
    Guarantee(
        "One alert per fire incident, within a second of the evidence",
        "Simulated incidents sent through Kafka raise exactly one fire alert each (and one clear); the "
        "alert is decided and readable on the alerts topic within 1 s (wall clock) of the broker "
        "receiving the reading that completed the evidence. Time to detect is in simulated seconds "
        "from incident onset.",
        ("tests/test_actors_e2e.py::"
         "test_simulated_incidents_through_kafka_and_ray_raise_one_alert_each_within_a_second",),
        Figures(("stream.alerts_end_to_end",), (
            ("readings", "readings"), ("fire incidents scored", "fire_incidents_scored"),
            ("with exactly one alert", "fire_incidents_with_one_alert"), ("duplicate alerts", "duplicate_alerts"),
            ("arrival -> alert decided, p50 / max (s)",
             lambda r: f"{r['arrival_to_detected_s']['p50']} / {r['arrival_to_detected_s']['max']}"),
            ("arrival -> readable on the alerts topic, p50 / max (s)",
             lambda r: f"{r['arrival_to_readable_s']['p50']} / {r['arrival_to_readable_s']['max']}"),
            ("time to detect by kind (simulated s)", "time_to_detect_simulated_s"),
            ("false fire alerts per 100 sensor-hours", "false_fire_alerts_per_100_sensor_h"),
        )),
        "The scenario is small (CI-sized); docs/detection.md has the larger offline evaluation.",
    ),
    Guarantee(
        "Bad input goes to the dead-letter topic with its reason, and nothing else is lost",
        "Every malformed message (a corpus of adversarial payloads plus a seeded random sample: random "
        "bytes, deep or huge JSON, odd unicode, extreme numbers) lands in smoke_sensor_data.dlq with the "
        "original bytes and a machine-readable reason, is counted by reason, and valid traffic around it "
        "keeps flowing; no worker crashes. A property-based fuzz of decode and validation checks the same "
        "contract on generated payloads.",
        ("tests/test_actors_dlq_metrics.py::test_adversarial_corpus_goes_to_the_dlq_while_valid_traffic_flows",
         "tests/test_ingest_validation.py::test_fuzz_adversarial_kafka_values"),
        Figures(("kafka_payload_fuzz", "kafka_validation_fuzz"), (
            ("messages", "messages"), ("in the lake (valid)", lambda r: r.get("in_lake", r.get("accepted"))),
            ("rejected (in the dead-letter topic, for the stream run)",
             lambda r: r["in_dlq"] if "in_dlq" in r else r["messages"] - r["accepted"]),
            ("worker restarts", "worker_restarts"),
            ("rejections by reason", lambda r: r.get("dlq_by_reason", r.get("rejected_by_reason"))),
        )),
    ),
    Guarantee(
        "No broker at start-up: bounded retries, then one clear line",
        "smoke simulate and smoke stream start try the broker's address a bounded "
        "number of times with backoff, then exit 1 with one line naming the address and the cause, "
        "not a traceback and not kafka-python's 30 s wait per client.",
        ("tests/test_actors_reliability.py::test_no_broker_at_start_up_fails_fast_with_one_clear_line",),
        Figures(("stream.no_broker_at_start",), (
            ("attempts", "attempts"), ("seconds until the error, per entry point", "seconds_to_fail"),
            ("the line", "message"),
        )),
    ),
    Guarantee(
        "The broker goes away mid-stream: workers back off and resume",
        "Workers notice an unreachable broker, say so once (log line and status), wait without "
        "restarting or spinning, and resume from their checkpoints when it returns. The embedded broker "
        "keeps its log in memory, so it comes back empty: the workers detect offsets below their "
        "checkpoint, read the new log from its beginning under a new log epoch (the old log's lake "
        "files are kept), and do not crash.",
        ("tests/test_actors_reliability.py::test_broker_outage_mid_stream_workers_back_off_and_resume",
         "tests/test_actors_broker_watch.py::"
         "test_broker_restart_is_detected_and_the_new_log_is_read_from_its_beginning"),
        Figures(("stream.broker_outage", "stream.broker_reset"), (
            ("outage (s)", "outage_s"), ("worker restarts", "worker_restarts"),
            ("worker CPU share during the outage (worst worker)",
             lambda r: max(r["worker_cpu_share_during_outage"].values())),
            ("resets detected", lambda r: r.get("resets", r.get("resets_detected"))),
            ("first new reading processed after the return (s)", "back_to_first_new_row_processed_s"),
            ("all new readings in the lake after the return (s)",
             lambda r: r.get("back_to_all_new_rows_in_lake_s", r.get("new_log_in_lake_s"))),
            ("rows of the old log kept", "old_log_rows_kept"),
        )),
        "With the embedded broker, readings sent while it was down, or held only in its memory when it "
        "stopped, are gone: that is the broker, not the stream. A real Kafka cluster keeps them and the "
        "workers resume from their committed offsets.",
    ),
    Guarantee(
        "Memory stays flat under sustained load",
        "A worker's resident memory grows during warm-up (per-sensor state, Arrow buffers) and then "
        "stays flat: growth after warm-up and the least-squares slope are bounded.",
        ("tests/test_actors_reliability.py::test_soak_keeps_worker_memory_flat",),
        Figures(("stream.soak",), (
            ("duration (s)", "duration_s"), ("sensors", "sensors"), ("target rate (/s)", "target_rate"),
            ("achieved rate (/s)", "achieved_rate"), ("events processed", "events_processed"),
            ("RSS at start, worst worker (MB)", _soak_worst("start_mb")),
            ("RSS after warm-up, worst worker (MB)", _soak_worst("after_warmup_mb")),
            ("RSS max, worst worker (MB)", _soak_worst("max_mb")),
            ("growth after warm-up, worst worker (MB)", _soak_worst("growth_after_warmup_mb")),
            ("slope after warm-up, worst worker (MB/min)", _soak_worst("slope_mb_per_min")),
            ("bounds asserted", "bounds"),
        )),
        "Evicting idle sensors bounds state by reusing their slots; it does not return memory to the "
        "operating system (docs/stream.md).",
    ),
    Guarantee(
        "A Serve replica killed under load: only its in-flight requests fail, and Serve replaces it",
        "With two replicas, killing one with SIGKILL fails at most the requests in flight on it; the "
        "surviving replica keeps answering, Serve starts a new replica, and every request sent after that "
        "succeeds. Each failed request succeeded when retried once.",
        ("tests/test_serve_reliability.py::test_replica_killed_under_load_is_replaced_and_traffic_recovers",
         "tests/test_serve_reliability.py::test_replicas_killed_repeatedly_under_heavier_load",
         "tests/test_serve_reliability.py::test_replica_killed_behind_haproxy"),
        Figures(("serve_replica_kill", "serve_replica_kill_full", "serve_replica_kill_haproxy"), (
            ("clients", "clients"), ("kills", "kills"), ("requests", "requests"), ("failed", "failed"),
            ("failed (%)", "failed_pct"), ("failed, then succeeded on one retry", "retried_ok"),
            ("replica replaced after (s, worst)", "replaced_s_max"),
            ("last failure after the kill (s, worst)", "errors_end_s_max"),
        )),
        "Clients should retry an idempotent /predict once on a 5xx or a closed connection.",
    ),
    Guarantee(
        "A model promoted under load: replicas switch with zero failed requests",
        "When the registry's production alias moves, each replica loads the new version completely "
        "in a thread and then swaps one reference; a request already scoring keeps the model it took, "
        "so no request fails during the switch.",
        ("tests/test_serve_lifecycle.py::test_hot_reload_under_load_has_zero_failed_requests",),
        Figures(("serve.hot_reload",), (
            ("clients", "clients"), ("requests", "requests"), ("failed", "failed"),
            ("answered by the old version", "before_switch"), ("answered by the new version", "after_switch"),
        )),
    ),
    Guarantee(
        "Bad HTTP requests get a 4xx naming the field, never a 5xx",
        "A property-based fuzz of every POST operation, generated from the served /openapi.json, gets "
        "only documented statuses and no 5xx; every error names its field, and every rejection a "
        "response reported is counted by its reason in the metrics.",
        ("tests/test_serve_api.py::test_fuzz_every_post_endpoint_from_the_openapi_schema",),
        Figures(("http_openapi_fuzz",), (
            ("requests", "requests"), ("server errors (5xx)", "server_errors"), ("by status", "by_status"),
            ("rejections counted by reason", "rejections_counted_by_reason"),
        )),
    ),
)


def read(record: dict, reader: Reader) -> object:
    """One figure of a scenario's record; ``not recorded`` when the run did not measure it."""
    try:
        if callable(reader):
            value = reader(record)
        else:
            value = record
            for part in reader.split("."):
                value = value[part]
    except (KeyError, TypeError, ValueError):
        return NOT_RECORDED
    return NOT_RECORDED if value is None else value


def render_value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {render_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(render_value(v) for v in value) or "none"
    return format_cell(value).replace("|", "/")


def columns(figures: Figures, recorded: dict[str, dict]) -> list[tuple[str, dict | None]]:
    """(heading, record) per column: each scenario, or each of its recorded sizes ``name[size]``."""
    out: list[tuple[str, dict | None]] = []
    for name in figures.scenarios:
        sized = sorted((key for key in recorded if key.startswith(name + "[")),
                       key=lambda key: (not key.endswith("[short]"), key))
        if sized:
            out += [(key, recorded[key]) for key in sized]
        else:
            out.append((name, recorded.get(name)))
    return out


def unrecorded(run: dict) -> list[str]:
    """Scenarios RELIABILITY.md quotes that the run did not record."""
    return sorted({heading for g in GUARANTEES if g.figures
                   for heading, record in columns(g.figures, run.get("scenarios", {})) if record is None})


def render(run: dict) -> str:
    recorded: dict[str, dict] = run.get("scenarios", {})
    lines = [
        "# Reliability",
        "",
        "Generated by `python -m bench.reliability_report` from a recorded run; do not edit by hand.",
        "Each guarantee names the tests that assert it; the figures are what those tests measured.",
        "CI runs the short scenarios on every change (`make test`); the figures below come from the",
        "run recorded here.",
        "",
        f"Recorded run: `{run.get('command', '?')}`",
        "",
        f"Mode: {run.get('mode', '?')} (short scenarios run in CI; `--full` adds the long ones), "
        f"measured {run.get('measured_at', '?')} on {run.get('machine') or str(run.get('cpus', '?')) + ' CPUs'}.",
        "",
        "Reproduce: `make reliability` (the same command, then this script).",
        "",
    ]
    for number, guarantee in enumerate(GUARANTEES, 1):
        lines += [f"## {number}. {guarantee.title}", "", guarantee.promise, "", "Proved by:", ""]
        lines += [f"- `{test}`" for test in guarantee.tests]
        lines.append("")
        if guarantee.figures is not None:
            cols = columns(guarantee.figures, recorded)
            rows = [[label, *(render_value(read(record, reader)) if record is not None else NOT_RECORDED
                              for _, record in cols)]
                    for label, reader in guarantee.figures.rows]
            lines += [*markdown_table(["figure", *(f"`{heading}`" for heading, _ in cols)], rows), ""]
        if guarantee.limits:
            lines += [f"Limits: {guarantee.limits}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recorded", nargs="?", type=Path, default=RECORDED,
                        help=f"JSON written by pytest --reliability-out (default {RECORDED.relative_to(ROOT)})")
    parser.add_argument("--out", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    if not args.recorded.exists():
        print(f"reliability_report: {args.recorded} does not exist: run the scenarios with "
              "--reliability-out first (make reliability)", file=sys.stderr)
        return 1
    run = json.loads(args.recorded.read_text())
    args.out.write_text(render(run) + "\n")
    missing = unrecorded(run)
    print(f"reliability_report: wrote {args.out} from {args.recorded} ({len(run['scenarios'])} scenarios"
          + (f"; not recorded: {', '.join(missing)})" if missing else ")"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
