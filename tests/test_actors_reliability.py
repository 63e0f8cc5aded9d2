"""Reliability scenarios of the stream (issue 7, "Proof"): each records what it measured.

Real Ray (the session ``ray_cluster``), real embedded brokers, real kafka-python
clients, real OS signals. The short versions run in CI; the long ones are marked
``full`` (``pytest --full``). Figures go to ``reliability_record`` under
``stream.<scenario>[short|full]`` and, with ``--reliability-out PATH``, into a JSON
file that RELIABILITY.md quotes.

1. ``kill -9`` of a PartitionWorker's process mid-stream: every input offset in the
   lake or the DLQ exactly once, each alert once, recovery time measured.
   (``ray.kill`` and node removal are measured in ``test_actors_recovery.py``.)
2. No broker at start-up: the API, ``smoke simulate`` and ``smoke stream start`` (also
   what a stream job runs) give up after bounded retries with one line naming the address and
   the cause.
3. The broker goes away mid-stream and comes back (memory-only, so empty): workers
   stay alive without spinning, then detect the reset and read the new log.
4. Soak: the fleet simulator at a steady rate with a fixed sensor count; worker
   memory sampled from ``/proc`` and its growth after warm-up bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray

from actors.supervisor import get_stream, lag_summary, start_stream, total_lag
from ingest.broker import (
    CONNECT_ATTEMPTS,
    BrokerError,
    BrokerUnreachable,
    EmbeddedBroker,
    bootstrap_addresses,
    ensure_topics,
    free_port,
    wait_reachable,
)
from ingest.producer import simulate_to_kafka
from tests.stream_support import (
    BackgroundProducer,
    all_consumed,
    assert_exactly_once,
    lake_rows,
    measure_takeover,
    produce,
    reading,
    running_stream,
    stream_settings,
    wait_for,
)
from tests.test_actors_recovery import MALFORMED, assert_alerts_once, offline_alerts, simulated, traffic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def short_or_full(short: dict, full: dict) -> list:
    """Parameters of a scenario: the CI version, and the long one behind ``--full``."""
    return [pytest.param(short, id="short"), pytest.param(full, id="full", marks=[pytest.mark.full])]


def status_of(supervisor) -> dict:
    return ray.get(supervisor.status.remote(), timeout=60)


def processed(status: dict) -> int:
    return sum(w.get("totals", {}).get("processed", 0) for w in status["workers"].values())


def all_lag_zero(supervisor) -> bool:
    """Every partition reported by a live worker, with nothing left to read."""
    status = status_of(supervisor)
    lags = lag_summary(status)
    return sorted(lags) == status["partitions"] and all(v == 0 for v in lags.values())


def rss_mb(pid: int) -> float:
    """Resident memory of a local process from /proc (the Ray nodes of the tests run on this machine)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a local process has used (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_log_lines(ray_cluster, pid: int, text: str) -> list[str]:
    """Lines containing ``text`` that the worker process ``pid`` wrote to its Ray log (stderr)."""
    logs = Path(ray_cluster.head_node.get_logs_dir_path())
    return [line for path in logs.glob(f"worker-*-{pid}.err")
            for line in path.read_text(errors="replace").splitlines() if text in line]


def worker_pids(status: dict) -> dict[str, int]:
    return {w: info["pid"] for w, info in status["workers"].items() if "pid" in info}


# 1. kill -9 of a worker's process ---------------------------------------------------------------


@pytest.mark.parametrize("size", short_or_full({"batches": 150, "kills": 1}, {"batches": 600, "kills": 3}))
def test_kill_9_of_a_worker_process_loses_nothing_and_recovers(ray_cluster, settings, reliability_record,
                                                               size) -> None:
    mode = "full" if size["kills"] > 1 else "short"
    s = stream_settings(settings, workers=2, checkpoint_every_messages=300)
    batches = simulated(size["batches"])
    items = traffic(batches)
    expected_alerts = offline_alerts(s, batches)
    assert any(state == "raised" for _, state in expected_alerts), "the input must raise alerts"
    takeovers = []
    with running_stream(s) as supervisor:
        with BackgroundProducer(s.kafka.bootstrap_servers, s.kafka.topic, items, rate=1000) as sending:
            for k in range(size["kills"]):
                # Spread the kills over the input: the k-th once k/kills of it has been processed.
                threshold = max(300, len(items) * k // size["kills"])
                wait_for(lambda t=threshold: processed(status_of(supervisor)) >= t, 120,
                         what=f"{threshold} readings processed")
                status = status_of(supervisor)
                victim = sorted(status["workers"])[k % 2]
                pid = status["workers"][victim]["pid"]
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                assert b"PartitionWorker" in cmdline, f"pid {pid} is not a PartitionWorker: {cmdline[:120]!r}"
                handles = ray.get(supervisor.worker_handles.remote(), timeout=60)
                sent_at_kill = sending.sent
                killed_at = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                figures = measure_takeover(supervisor, status, handles, victim, killed_at)
                takeovers.append(figures | {"partitions": len(status["assignment"][victim]["partitions"]),
                                            "sent_at_kill": sent_at_kill, "processed_at_kill": processed(status)})
        produced_at = time.monotonic()
        wait_for(lambda: all_lag_zero(supervisor), 120, 0.2, what="lag back to zero")
        lag_zero_after_input_s = round(time.monotonic() - produced_at, 3)
        wait_for(all_consumed(s, len(items)), 120, what="every offset in the lake or the DLQ")
        counts = assert_exactly_once(s, len(items))
        assert counts["dlq"] == sum(1 for _, v in items if v == MALFORMED)
        assert_alerts_once(s, expected_alerts)
        status = status_of(supervisor)
        assert status["restarts"] >= size["kills"] and len(status["workers"]) == 2
    reliability_record(
        f"stream.kill9_worker_process[{mode}]", readings=len(items), kills=size["kills"], lake=counts["lake"],
        dlq=counts["dlq"], lost=0, duplicated=0, alerts=len(expected_alerts), duplicate_alerts=0,
        takeovers=takeovers, worst_resumed_s=max(t["resumed_s"] for t in takeovers),
        lag_zero_after_input_s=lag_zero_after_input_s, restarts=status["restarts"])


# 2. No broker at start-up ---------------------------------------------------------------------


def test_bootstrap_addresses_parse_lists_and_reject_bad_ports() -> None:
    assert bootstrap_addresses("a:1, b:2") == [("a", 1), ("b", 2)]
    assert bootstrap_addresses("kafka") == [("kafka", 9092)]
    with pytest.raises(BrokerError, match="port must be a number"):
        bootstrap_addresses("a:x")


def test_wait_reachable_retries_with_backoff_until_the_broker_listens() -> None:
    port = free_port()
    listener = socket.socket()
    opened = threading.Timer(0.5, lambda: (listener.bind(("127.0.0.1", port)), listener.listen()))
    started = time.monotonic()
    opened.start()
    try:
        wait_reachable(f"127.0.0.1:{port}", attempts=5, first_delay_s=0.25)
        # 0.25 + 0.5 s of pauses pass before the third attempt, the first after the port opened.
        assert 0.5 <= time.monotonic() - started < 3.0
    finally:
        opened.join()
        listener.close()


def test_no_broker_at_start_up_fails_fast_with_one_clear_line(ray_cluster, settings, reliability_record) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    # Commands that connect first, started together (each is a fresh interpreter).
    commands = {
        "smoke simulate": [sys.executable, "-m", "cluster.cli", "simulate", "--bootstrap-servers", dead,
                           "--duration", "5"],
        "smoke stream start": [sys.executable, "-m", "cluster.cli", "stream", "start", "--bootstrap-servers", dead,
                               "--address", ray_cluster.address],
    }
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    runs = {name: (time.monotonic(), subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                                       stderr=subprocess.PIPE, text=True))
            for name, argv in commands.items()}

    s = stream_settings(settings)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as raised:
        start_stream(s, dead)
    api_s = time.monotonic() - started
    assert get_stream(s) is None, "no supervisor may be left behind"
    assert dead in str(raised.value) and "Connection refused" in str(raised.value)
    assert f"{CONNECT_ATTEMPTS} attempts" in str(raised.value)

    figures = {"start_stream": round(api_s, 2)}
    for name, (began, process) in runs.items():
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"{name} against {dead} still ran after 60 s") from None
        figures[name] = round(time.monotonic() - began, 2)
        lines = err.strip().splitlines()
        assert process.returncode == 1, f"{name}: exit {process.returncode}, stderr {err!r}"
        assert len(lines) == 1 and "Traceback" not in err, f"{name}: not one line: {err!r}"
        assert dead in lines[0] and "Connection refused" in lines[0], f"{name}: {lines[0]!r}"
    # Bounded: the retries pause 0.25 + 0.5 + 1 + 2 s; kafka-python alone waited 30 s per client.
    assert api_s < 15, f"start_stream took {api_s:.1f} s to give up"
    reliability_record("stream.no_broker_at_start[short]", address=dead, attempts=CONNECT_ATTEMPTS,
                       seconds_to_fail=figures, message=str(raised.value))


# 3. The broker goes away mid-stream and comes back ------------------------------------------------


def _readings(first: int, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"out-{i % 16}".encode(), reading(f"out-{i % 16}", 1_780_000_000.0 + i, i))
            for i in range(first, first + n)]


@pytest.mark.parametrize("plan", short_or_full({"outage_s": 8.0}, {"outage_s": 60.0}))
def test_broker_outage_mid_stream_workers_back_off_and_resume(ray_cluster, settings, reliability_record,
                                                              plan) -> None:
    mode = "full" if plan["outage_s"] > 30 else "short"
    own = EmbeddedBroker().start()
    try:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": own.bootstrap_servers})
        ensure_topics(own.bootstrap_servers, kafka)
        s = stream_settings(settings.model_copy(update={"kafka": kafka}), workers=2, reset_grace_s=1.0)

        def epoch_rows(epoch: int) -> int:
            lake = lake_rows(s)
            return int((lake["log_epoch"] == epoch).sum())

        with running_stream(s) as supervisor:
            produce(own.bootstrap_servers, kafka.topic, _readings(0, 400))
            wait_for(lambda: epoch_rows(0) == 400, 60, what="400 rows of the first log in the lake")
            before = status_of(supervisor)
            pids = worker_pids(before)
            errors_before = sum(w["totals"]["errors"] for w in before["workers"].values())
            cpu_before = {w: cpu_seconds(pid) for w, pid in pids.items()}

            own.stop()
            down_at = time.monotonic()
            time.sleep(plan["outage_s"])
            during = status_of(supervisor)
            cpu_share = {w: round((cpu_seconds(pid) - cpu_before[w]) / (time.monotonic() - down_at), 3)
                         for w, pid in pids.items()}
            outage_s = time.monotonic() - down_at
            assert sorted(during["workers"]) == sorted(pids) and during["restarts"] == 0, "a worker died"
            assert all("error" not in w for w in during["workers"].values()), during["workers"]
            errors = sum(w["totals"]["errors"] for w in during["workers"].values()) - errors_before
            # Each worker says so: in its status, and in one log line naming the address and the cause.
            noticed = {w: info["kafka_unreachable_s"] for w, info in during["workers"].items()}
            idle = {w: info["loop_idle_s"] for w, info in during["workers"].items()}
            assert max(idle.values()) < 5, f"a loop is blocked instead of waiting: {idle}"
            assert all(v is not None and v > 0 for v in noticed.values()), f"unnoticed outage: {noticed}"
            for worker, pid in pids.items():
                assert own.bootstrap_servers in during["workers"][worker]["kafka_error"]
                lines = worker_log_lines(ray_cluster, pid, f"{worker}: cannot reach Kafka at {own.bootstrap_servers}")
                assert len(lines) == 1, f"{worker} logged the outage {len(lines)} times: {lines}"
            # No busy loop: a spinning worker would use a whole core; failed iterations pause 1 s each.
            assert max(cpu_share.values()) < 0.5, f"workers spin while the broker is away: {cpu_share}"
            assert errors <= 2 * outage_s + 4, f"{errors} failed iterations in {outage_s:.0f} s"

            own = EmbeddedBroker(port=own.port).start()  # same address, empty memory
            back_at = time.monotonic()
            ensure_topics(own.bootstrap_servers, kafka)
            produce(own.bootstrap_servers, kafka.topic, _readings(400, 120))
            wait_for(lambda: processed(status_of(supervisor)) > processed(before), 120, 0.1,
                     what="the first reading of the new log processed")
            first_processed_s = time.monotonic() - back_at
            wait_for(lambda: epoch_rows(1) >= 1, 120, 0.2, what="the first reading of the new log in the lake")
            first_row_s = time.monotonic() - back_at
            wait_for(lambda: epoch_rows(1) == 120, 120, 0.2, what="120 rows of the new log in the lake as epoch 1")
            all_rows_s = time.monotonic() - back_at
            wait_for(lambda: all_lag_zero(supervisor), 60, 0.2, what="lag back to zero on the new log")
            after = status_of(supervisor)
            assert after["restarts"] == 0, "the outage must not kill workers"
            assert sum(w["totals"]["resets"] for w in after["workers"].values()) == 4
            assert epoch_rows(0) == 400, "the first log's rows stay in the lake"
            assert all(w["kafka_unreachable_s"] is None for w in after["workers"].values())
            for worker, pid in pids.items():
                assert len(worker_log_lines(ray_cluster, pid, f"{worker}: Kafka at {own.bootstrap_servers} is "
                                                             "reachable again")) == 1
            last_errors = sorted({w["last_error"] for w in during["workers"].values() if w.get("last_error")})
        reliability_record(
            f"stream.broker_outage[{mode}]", outage_s=round(outage_s, 1), worker_restarts=0,
            failed_iterations_during_outage=errors, worker_cpu_share_during_outage=cpu_share,
            last_error_during_outage=last_errors, resets=4, loop_idle_s=idle,
            unreachable_reported_s={w: round(v, 1) for w, v in noticed.items()},
            back_to_first_new_row_processed_s=round(first_processed_s, 2),
            back_to_first_new_row_in_lake_s=round(first_row_s, 2), back_to_all_new_rows_in_lake_s=round(all_rows_s, 2),
            old_log_rows_kept=400)
    finally:
        own.stop()


# 4. Soak ------------------------------------------------------------------------------------------


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return 60 * sum((t - mean_t) * (m - mean_m) for t, m in samples) / var if var else 0.0


SOAK_SHORT = {"duration_s": 60, "rate": 500, "sensors": 500, "warmup_s": 20, "every_s": 3,
              "max_growth_mb": 150, "max_slope_mb_min": 100}
SOAK_FULL = {"duration_s": 600, "rate": 2000, "sensors": 2000, "warmup_s": 120, "every_s": 5,
             "max_growth_mb": 100, "max_slope_mb_min": 5}


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("soak", short_or_full(SOAK_SHORT, SOAK_FULL))
def test_soak_keeps_worker_memory_flat(ray_cluster, settings, reliability_record, capsys, soak) -> None:
    mode = "full" if soak["duration_s"] >= 300 else "short"
    s = stream_settings(settings, workers=2, checkpoint_interval_s=5.0, poll_max_records=2000)
    s = s.model_copy(update={"simulator": s.simulator.model_copy(update={"sensor_prefix": "soak", "seed": 11})})

    def progress(text: str) -> None:
        if mode == "full":  # ten minutes: say how it goes
            with capsys.disabled():
                print(f"\n[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)

    samples: dict[str, list[tuple[float, float]]] = {}
    with running_stream(s) as supervisor:
        pids = worker_pids(status_of(supervisor))
        assert len(pids) == 2
        stop = threading.Event()
        report: dict = {}

        def run_producer() -> None:
            report["report"] = simulate_to_kafka(
                s, s.kafka.bootstrap_servers, soak["duration_s"], sensors=soak["sensors"], rate=soak["rate"],
                time_scale=1.0, incident_log=Path(s.stream.lake_dir).parent / "incidents.jsonl", stop=stop)

        producer = threading.Thread(target=run_producer, name="soak-producer", daemon=True)
        started = time.monotonic()
        producer.start()
        next_report = started + 30
        try:
            while producer.is_alive():
                elapsed = time.monotonic() - started
                for worker, pid in pids.items():
                    samples.setdefault(worker, []).append((round(elapsed, 1), round(rss_mb(pid), 1)))
                if time.monotonic() >= next_report:
                    status = status_of(supervisor)
                    progress(f"{elapsed:.0f}/{soak['duration_s']} s, processed {processed(status):,}, lag "
                             f"{total_lag(status):,}, RSS MB " + ", ".join(f"{v[-1][1]:.0f}" for v in samples.values()))
                    next_report += 30
                producer.join(soak["every_s"])
        finally:
            stop.set()
            producer.join(120)
        wall_s = time.monotonic() - started
        sent = report["report"]
        assert sent.failed == 0, sent.summary()
        status = status_of(supervisor)
        lag_at_end = total_lag(status)

        def handled() -> int:
            """Readings processed or rejected; without replays (no restart), each delivered one counts once."""
            workers = status_of(supervisor)["workers"].values()
            return sum(w["totals"]["processed"] + w["totals"]["rejected"] for w in workers)

        # Not "lag 0": the high watermark the broker reports can trail by a few records (docs/architecture.md).
        wait_for(lambda: handled() >= sent.delivered, 120, 0.5,
                 what=f"all {sent.delivered} delivered readings handled after the soak")
        drained_s = time.monotonic() - started - wall_s
        status = status_of(supervisor)
        assert status["restarts"] == 0 and worker_pids(status) == pids, "a worker was replaced during the soak"
        totals = [w["totals"] for w in status["workers"].values()]
        done = sum(t["processed"] + t["rejected"] for t in totals)
        assert done == sent.delivered, f"{sent.delivered} delivered, {done} processed or rejected"

    figures = {}
    for worker, series in samples.items():
        settled = [(t, m) for t, m in series if t >= soak["warmup_s"]]
        assert len(settled) >= 5, f"too few samples after warm-up: {series}"
        growth = max(m for _, m in settled) - settled[0][1]
        slope = slope_mb_per_min(settled)
        figures[worker] = {"start_mb": series[0][1], "after_warmup_mb": settled[0][1], "end_mb": series[-1][1],
                           "max_mb": max(m for _, m in series), "growth_after_warmup_mb": round(growth, 1),
                           "slope_mb_per_min": round(slope, 2)}
    reliability_record(
        f"stream.soak[{mode}]", duration_s=soak["duration_s"], target_rate=soak["rate"], sensors=soak["sensors"],
        delivered=sent.delivered, achieved_rate=round(sent.delivered / wall_s, 1),
        events_processed=sum(t["processed"] for t in totals), rejected=sum(t["rejected"] for t in totals),
        alerts=sum(t["alerts"] for t in totals), lag_at_end_of_input=lag_at_end,
        drained_after_input_s=round(drained_s, 2), warmup_s=soak["warmup_s"], sample_every_s=soak["every_s"],
        workers=figures, bounds={"growth_mb": soak["max_growth_mb"], "slope_mb_per_min": soak["max_slope_mb_min"]})
    for worker, f in figures.items():
        assert f["growth_after_warmup_mb"] <= soak["max_growth_mb"], f"{worker} grew: {f}"
        assert f["slope_mb_per_min"] <= soak["max_slope_mb_min"], f"{worker} keeps growing: {f}"
