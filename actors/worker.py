"""The stream worker's loop and its emission: a Ray actor that runs detection on the partitions it owns.

The loop (:class:`StreamLoop`) runs on one thread of the actor and is the only
user of its :class:`~actors.partition_reader.PartitionReader` (the consumer, on
confluent-kafka); actor methods (``assign``, ``status``, ``stop``) hand commands to
that thread and wait for the answer.

Per iteration: poll a batch (``poll(timeout_ms, max_records)``), validate it in
one go, send rejected readings to the DLQ with their original bytes, compute
features and run the engine per partition, send alerts, buffer accepted rows
for the lake, tick the engine (silent sensors fire even when nothing arrives),
then housekeeping: lag, broker-reset detection, model reload, idle-sensor
eviction, and the checkpoint when it is due.

What the loop delegates: which partitions it owns and how each is restored
(:mod:`actors.ownership`), noticing that the broker lost a log
(:mod:`actors.log_reset`), whether the broker is reachable at all
(:mod:`actors.broker_watch`), and making progress durable (:mod:`actors.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import ray

from actors.broker_watch import BrokerWatch
from actors.checkpoint import Checkpointer
from actors.checkpoint_store import CheckpointStore
from actors.log_reset import LogResetWatch
from actors.metrics import WorkerMetrics
from actors.ownership import PartitionOwnership
from actors.partition_reader import PartitionReader, Records
from actors.sinks import Sinks, unique_reasons
from actors.state import PartitionState
from ingest.kafka_clients import quiet_library_logs
from ingest.settings import Settings
from ingest.validation import validate_messages
from train.model_watch import ModelWatch

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 120.0


class StreamLoop:
    """The worker's single-threaded processing loop; see the module docstring."""

    def __init__(self, settings: Settings, bootstrap_servers: str, worker_id: str,
                 metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.stream = settings.stream
        self.bootstrap_servers = bootstrap_servers
        self.worker_id = worker_id
        self.topic = self.kafka.topic
        self.metrics = metrics
        # Every position is set by us (snapshot, committed offset or beginning); the broker never
        # silently moves a partition (see actors.partition_reader).
        self.reader = PartitionReader(bootstrap_servers, self.topic, self.kafka.group_id, worker_id,
                                      security=self.kafka.security)
        self.store = CheckpointStore(self.stream.checkpoint_dir)
        self.sinks = Sinks(bootstrap_servers, self.topic, self.kafka.alerts_topic, self.kafka.dlq_topic,
                           self.stream.lake_dir, client_id=worker_id, security=self.kafka.security)
        self.checkpointer = Checkpointer(self.store, self.sinks, self.reader)
        self.model_watch = ModelWatch(settings.train.registry_dir, settings.train.model_name,
                                      poll_s=self.stream.model_poll_s)
        self.model_watch.poll()
        self.broker_watch = BrokerWatch(bootstrap_servers, worker_id)
        self._commands: queue.Queue[tuple[Callable[[], Any], Future]] = queue.Queue()
        self._stopping = threading.Event()
        self._last_checkpoint = time.monotonic()
        self._next_evict = time.monotonic() + self.stream.idle_eviction_s / 10
        self.totals = {"processed": 0, "rejected": 0, "alerts": 0, "suppressed": 0, "checkpoints": 0,
                       "evicted": 0, "resets": 0, "errors": 0}
        self.last_error: str | None = None
        self.last_checkpoint_s: float | None = None
        self.published: dict[str, Any] = {"worker": worker_id, "partitions": {}, "totals": dict(self.totals)}
        self._published_at = 0.0
        self.heartbeat = time.monotonic()  # end of the last loop iteration
        self.ownership = PartitionOwnership(settings, bootstrap_servers, worker_id, self.reader, self.store,
                                            self.sinks, self.checkpointer, self.model_watch, self.checkpoint,
                                            on_release=self._released)
        self.log_reset = LogResetWatch(bootstrap_servers, self.kafka, worker_id, self.reader, self.sinks,
                                       self.stream.reset_grace_s, self.checkpoint)

    # Commands from other threads ---------------------------------------------------

    def call(self, fn: Callable[[], Any], timeout_s: float = CALL_TIMEOUT_S) -> Any:
        future: Future = Future()
        self._commands.put((fn, future))
        return future.result(timeout=timeout_s)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except BaseException as err:  # handed to the caller
                future.set_exception(err)

    # Partition ownership (actors.ownership) --------------------------------------------

    @property
    def states(self) -> dict[int, PartitionState]:
        return self.ownership.states

    def set_partitions(self, partitions: list[int]) -> list[int]:
        """Own exactly ``partitions``: checkpoint and release the others, restore the new ones."""
        return self.ownership.set_partitions(partitions)

    def _released(self, partition: int) -> None:
        self.log_reset.forget(partition)

    # The loop --------------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            self.run_once()

    def run_once(self) -> bool:
        """One iteration that never raises; False (after a 1 s pause) when it failed."""
        self.heartbeat = time.monotonic()
        try:
            self.step()
            return True
        except Exception as err:  # bad luck never stops the stream; the cause is logged
            self.totals["errors"] += 1
            self.last_error = f"{type(err).__name__}: {err}"
            # The failed batch may have half-updated the state and moved the consumer past
            # unprocessed records: neither may survive, so start again from the snapshots.
            self.ownership.needs_recovery = True
            if not self.broker_watch.check(time.monotonic(), force=True):
                return False  # the watch logged the outage once; step() waits for the broker to return
            log.error("%s: iteration failed, restoring partitions %s from their snapshots in 1 s: %s",
                      self.worker_id, self.ownership.owned, self.last_error)
            time.sleep(1.0)
            return False

    def step(self) -> int:
        """One iteration; returns the number of records polled."""
        self._run_commands()
        if self._stopping.is_set() or self.broker_watch.waiting(time.monotonic()):
            return 0
        if self.ownership.needs_recovery:
            self.ownership.recover()
        if not self.states:
            time.sleep(self.stream.poll_timeout_ms / 1000)
            return 0
        polled = self.reader.poll(self.stream.poll_timeout_ms, self.stream.poll_max_records)
        if not polled:  # a quiet topic or a lost broker: the consumer cannot tell, the watch can
            self.broker_watch.check(time.monotonic())
        now = time.time()
        n = 0
        for partition, records in polled.items():
            state = self.states.get(partition)
            if state is not None and records:
                n += len(records)
                self._process(state, records, now)
        for state in self.states.values():
            self._emit(state, state.tick(now), None)
        self._housekeeping(now)
        return n

    def _process(self, state: PartitionState, records: Records, now: float) -> None:
        if state.next_offset is not None and records.offsets[0] < state.next_offset:
            records = records.since(state.next_offset)
            if not records:
                return
        if state.next_offset is None:
            self.sinks.lake.begin(state.partition, int(records.offsets[0]))
        batch = validate_messages(records.values)
        if batch.rejected:
            for pos, problems in batch.rejected.items():
                offset = int(records.offsets[pos])
                if offset in state.suppress_dlq:
                    continue
                self.sinks.send_dead_letter(records.values[pos], records.key(pos), problems, state.partition, offset,
                                            records.timestamp_ms(pos))
            self.totals["rejected"] += len(batch.rejected)
            if self.metrics:
                self.metrics.rejected_reasons(unique_reasons(batch.rejected.values()))
        if len(batch):
            idx = batch.index
            offsets = records.offsets[idx]
            # Arrival = the broker record's timestamp (producer create time): the ingest clock.
            arrival = records.timestamps_ms[idx] / 1000
            features, alerts = state.process(batch.sensor_ids, batch.timestamps, batch.values, arrival,
                                              self.store)
            self.sinks.lake.add(state.partition, offsets, batch.sensor_ids, batch.timestamps, arrival, features,
                                time.time())
            self.totals["processed"] += len(idx)
            if self.metrics:
                self.metrics.processed(state.partition, len(idx))
            if alerts:
                last_arrival = dict(zip(batch.sensor_ids, arrival.tolist(), strict=True))
                self._emit(state, alerts, last_arrival)
        state.next_offset = int(records.offsets[-1]) + 1
        state.messages_since_checkpoint += len(records)
        state.dirty = True

    def _emit(self, state: PartitionState, alerts: list, arrivals: dict[str, float] | None) -> None:
        for alert in alerts:
            identity = (alert.alert_id, alert.state)
            if identity in state.suppress_alerts:
                self.totals["suppressed"] += 1
                continue
            arrival = arrivals.get(alert.sensor_id) if arrivals else None
            if arrival is not None:
                # The alert service measures delivery latency from the reading's arrival.
                alert = dataclasses.replace(alert, arrival_time=float(arrival))
            self.sinks.send_alert(state.partition, alert)
            self.totals["alerts"] += 1
            if self.metrics:
                detected = _epoch(alert.detected_at)
                self.metrics.alert(alert.kind, alert.severity, alert.state, detected - _epoch(alert.event_time),
                                   None if arrival is None else detected - arrival)

    # Housekeeping --------------------------------------------------------------------------

    def _housekeeping(self, now: float) -> None:
        mono = time.monotonic()
        for p, state in list(self.states.items()):
            highwater = self.reader.highwater(p)
            if highwater is not None and state.next_offset is not None:
                if self.metrics:
                    self.metrics.consumer_lag(p, max(highwater - state.next_offset, 0))
                self.totals["resets"] += self.log_reset.check_end(state, highwater, mono)
        self.totals["resets"] += self.log_reset.check_committed(self.states.values(), mono)
        if self.model_watch.poll(mono):
            for state in self.states.values():
                if state.engine is not None:
                    state.engine.set_model(self.model_watch.model)
        if self.metrics:
            self.metrics.model_version(self.model_watch.version)
        if mono >= self._next_evict:
            self._next_evict = mono + max(self.stream.idle_eviction_s / 10, 1.0)
            budget = self.stream.evictions_per_sweep
            for state in self.states.values():
                evicted = state.evict_idle(now, self.stream.idle_eviction_s, self.store, limit=budget)
                self.totals["evicted"] += evicted
                budget -= evicted
                if budget == 0:  # more may be idle: come back in a second rather than stall the loop now
                    self._next_evict = mono + 1.0
                    break
        if (consumer_error := self.reader.take_error()) is not None:
            self.last_error = f"kafka consumer: {consumer_error}"
        self._record_checkpoint(self.checkpointer.finish())
        if self.checkpointer.last_error:
            self.last_error = f"checkpoint: {self.checkpointer.last_error}"
        due = (mono - self._last_checkpoint >= self.stream.checkpoint_interval_s
               or any(s.messages_since_checkpoint >= self.stream.checkpoint_every_messages
                      for s in self.states.values()))
        if due:
            self.checkpoint(wait=False)
        if mono - self._published_at >= 0.5:
            # Published for status calls from other threads, which never wait for this loop.
            self.published = self.status()
            self._published_at = mono
            if self.metrics:  # at the same pace: the bytes estimate walks every sensor's key
                sensors = sum(s.sensors() for s in self.states.values())
                per = self.published["state_bytes_per_sensor"]
                self.metrics.state(sensors, sensors * per)

    def checkpoint(self, states: list[PartitionState] | None = None, *, wait: bool = True) -> bool:
        """Start a checkpoint of ``states`` (default: all owned); ``wait`` also completes it."""
        self._last_checkpoint = time.monotonic()
        started = self.checkpointer.commit(self.states.values() if states is None else states, wait=wait)
        if wait:
            self._record_checkpoint(self.checkpointer.last_duration_s if started else None)
        return started

    def _record_checkpoint(self, seconds: float | None) -> None:
        if seconds is None:
            return
        self.totals["checkpoints"] += 1
        self.last_checkpoint_s = seconds
        if self.metrics:
            self.metrics.checkpoint.observe(seconds)

    # Status and shutdown -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        partitions = {}
        for p, state in self.states.items():
            highwater = self.reader.highwater(p)
            known = highwater is not None and state.next_offset is not None
            partitions[p] = {
                "next_offset": state.next_offset, "highwater": highwater,
                "lag": max(highwater - state.next_offset, 0) if known else None,
                "sensors": state.sensors(), "epoch": state.epoch, "evicted": len(state.evicted),
            }
        return {
            "worker": self.worker_id, "partitions": partitions, "totals": dict(self.totals),
            "model_version": self.model_watch.version, "last_error": self.last_error,
            "last_checkpoint_s": self.last_checkpoint_s,
            "state_bytes_per_sensor": max((s.nbytes_per_sensor() for s in self.states.values()), default=0),
        }

    def shutdown(self) -> dict[str, Any]:
        """Checkpoint everything owned, then close the clients (runs on the loop thread)."""
        error = None
        if self.states:
            try:
                self.checkpoint()
            except Exception as err:  # still close: the previous snapshot stays in force
                error = f"{type(err).__name__}: {err}"
                log.error("%s: final checkpoint failed, input since the previous one will be replayed: %s",
                          self.worker_id, error)
        self.checkpointer.close()
        status = self.status() | {"final_checkpoint_error": error}
        self._stopping.set()
        self.sinks.close()
        self.reader.close()
        return status


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_library_logs()


def _epoch(value: Any) -> float:
    """Alert times as epoch seconds whether the alert carries floats or RFC 3339 text."""
    if isinstance(value, int | float):
        return float(value)
    from ingest.validation import parse_timestamp

    return parse_timestamp(value)


@ray.remote(max_concurrency=4)
class PartitionWorker:
    """The Ray actor around :class:`StreamLoop`; its methods are called by the supervisor."""

    def __init__(self, settings: Settings, bootstrap_servers: str, worker_id: str) -> None:
        configure_logging()
        self.worker_id = worker_id
        self.loop = StreamLoop(settings, bootstrap_servers, worker_id, WorkerMetrics(worker_id))
        # What is allocated by now (Ray, pandas, pyarrow, our modules: about 190k objects) lives as
        # long as the actor. Without freezing it, each full collection of the cyclic GC walks all of
        # it and stops the loop for about 190 ms (measured on the 2-core machine): a latency spike.
        gc.freeze()
        self.thread = threading.Thread(target=self.loop.run, name=f"{worker_id}-loop", daemon=True)
        self.thread.start()

    def ready(self) -> dict[str, str]:
        ctx = ray.get_runtime_context()
        return {"worker": self.worker_id, "node_id": ctx.get_node_id(), "actor_id": ctx.get_actor_id()}

    def assign(self, partitions: list[int]) -> list[int]:
        return self.loop.call(lambda: self.loop.set_partitions(partitions))

    def status(self) -> dict[str, Any]:
        """The status the loop last published (at most about 0.5 s old); never waits for the loop."""
        if not self.thread.is_alive():
            raise RuntimeError(f"{self.worker_id}: the processing loop has stopped")
        # pid: which OS process to watch (memory) or signal (the kill -9 reliability test). The Kafka
        # fields are live: while the broker is away the loop waits and publishes nothing new.
        watch = self.loop.broker_watch
        return {**self.loop.published, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "loop_idle_s": round(time.monotonic() - self.loop.heartbeat, 3),
                "kafka_unreachable_s": watch.unreachable_for(), "kafka_error": watch.cause}

    def checkpoint(self) -> bool:
        return self.loop.call(self.loop.checkpoint)

    def stop(self) -> dict[str, Any]:
        status = self.loop.call(self.loop.shutdown)
        self.thread.join(timeout=10)
        return status
