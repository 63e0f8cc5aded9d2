"""The stream supervisor: a detached, named Ray actor that owns the partition assignment.

It keeps ``desired`` PartitionWorkers alive (spread over the nodes), gives every
partition of the readings topic to exactly one of them with
``KafkaConsumer.assign`` (never group ``subscribe``: see docs/architecture.md, "Platform facts"), and reacts
to change:

- a worker dies (``ray.kill``, a crash, its node is lost): its partitions go to
  the survivors at once, then a replacement is started and the partitions are
  rebalanced onto it; each new owner restores the partition's snapshot;
- ``scale(n)``: workers are added or drained (checkpoint, release) and removed;
- the topic gains partitions: they are assigned on the next check.

Moving a partition always releases it first (the old owner checkpoints it) and
then acquires it elsewhere, so two workers never own a partition at once.

Entry points for the CLI and the stack (all take the validated settings; the
caller has connected to Ray with an explicit address):
:func:`start_stream`, :func:`stream_status`, :func:`scale_stream`,
:func:`stop_stream`, :func:`get_stream`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import GetTimeoutError, RayActorError

from actors.metrics import SupervisorMetrics
from actors.worker import PartitionWorker, configure_logging
from ingest.broker import partition_count, wait_reachable
from ingest.settings import Settings

log = logging.getLogger(__name__)

HEAD_NODE_RESOURCE = "node:__internal_head__"
# The environment of every Ray node that runs the stream (`smoke up` and the `ray up` configs
# set it): Ray starts workers at nice 15, below every ordinary process on the host, so on a
# shared machine a busy producer, broker or client took the CPU from the detection loop.
# At 5,000 readings/s beside a nice-0 producer and consumer the p99 from arrival to
# detection went from 169-183 ms to 72-95 ms (docs/stream.md, "Measured").
STREAM_NODE_ENV = {"RAY_worker_niceness": "0"}
WORKER_READY_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 120.0
STUCK_LOOP_S = 300.0  # a loop iteration this long is a hang (kafka-python's known position() hang is ~300 s)
STATUS_TIMEOUT_S = 10.0  # status answers come from a published dict: slow means unreachable
PARTITION_RECHECK_S = 30.0


class StreamError(RuntimeError):
    """The stream cannot be started, found or changed; the message says why."""


def plan_assignment(partitions: list[int], current: dict[str, list[int]]) -> dict[str, list[int]]:
    """Spread ``partitions`` evenly over the workers in ``current``, moving as few as possible.

    >>> plan_assignment([0, 1, 2, 3], {"a": [0, 1, 2, 3], "b": []})
    {'a': [0, 1], 'b': [2, 3]}
    >>> plan_assignment([0, 1, 2, 3], {"a": [0, 2], "c": []})  # b died with 1 and 3
    {'a': [0, 2], 'c': [1, 3]}
    >>> plan_assignment([0, 1, 2], {"a": [0, 1, 2]})
    {'a': [0, 1, 2]}
    """
    if not current:
        return {}
    valid = set(partitions)
    # Workers holding the most keep the larger quotas, so fewer partitions move.
    order = sorted(current, key=lambda w: (-len([p for p in current[w] if p in valid]), w))
    base, extra = divmod(len(partitions), len(order))
    quota = {w: base + (1 if i < extra else 0) for i, w in enumerate(order)}
    plan: dict[str, list[int]] = {}
    claimed: set[int] = set()
    for w in order:
        keep = [p for p in sorted(current[w]) if p in valid and p not in claimed][: quota[w]]
        plan[w] = keep
        claimed.update(keep)
    free = [p for p in sorted(partitions) if p not in claimed]
    for w in order:
        while len(plan[w]) < quota[w] and free:
            plan[w].append(free.pop(0))
    return {w: sorted(plan[w]) for w in sorted(plan)}


@dataclass
class WorkerSlot:
    worker_id: str
    handle: ActorHandle
    node_id: str = ""
    partitions: list[int] = field(default_factory=list)


@ray.remote(num_cpus=0, max_concurrency=8)
class StreamSupervisor:
    """See the module docstring. Reconciliation runs on one monitor thread under ``_lock``."""

    def __init__(self, settings: Settings, bootstrap_servers: str) -> None:
        configure_logging()
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.name = settings.stream.supervisor_name
        self.desired = settings.stream.workers
        self.workers: dict[str, WorkerSlot] = {}
        self.partitions: list[int] = []
        self.metrics = SupervisorMetrics()
        self.events: list[str] = []  # recent ownership changes, for `smoke stream status`
        self.restarts = 0
        self._counter = 0
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._next_partition_check = 0.0
        self._spawn_backoff_until = 0.0
        self._monitor = threading.Thread(target=self._monitor_loop, name="stream-monitor", daemon=True)
        self._monitor.start()

    # Public methods ------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Block until ``desired`` workers run and every partition has an owner."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                owned = sorted(p for slot in self.workers.values() for p in slot.partitions)
                if self.partitions and len(self.workers) == self.desired and owned == self.partitions:
                    return self.assignment()
            time.sleep(0.1)
        raise StreamError(f"the stream did not become ready within {timeout_s:.0f} s: {self.assignment()}")

    def assignment(self) -> dict[str, Any]:
        with self._lock:
            return {w: {"node_id": s.node_id, "partitions": list(s.partitions)} for w, s in self.workers.items()}

    def status(self) -> dict[str, Any]:
        with self._lock:
            slots = list(self.workers.values())
        refs = {s.worker_id: s.handle.status.remote() for s in slots}
        # One shared deadline: a worker on a lost node must not hold the answer up per worker.
        ray.wait(list(refs.values()), num_returns=len(refs), timeout=STATUS_TIMEOUT_S)
        workers = {}
        for worker_id, ref in refs.items():
            try:
                workers[worker_id] = ray.get(ref, timeout=0.1)
            except (RayActorError, GetTimeoutError) as err:
                workers[worker_id] = {"worker": worker_id, "error": f"{type(err).__name__}"}
            except Exception as err:
                workers[worker_id] = {"worker": worker_id, "error": str(err).splitlines()[-1][:200]}
        return {"supervisor": self.name, "desired": self.desired, "partitions": list(self.partitions),
                "workers": workers, "assignment": self.assignment(), "restarts": self.restarts,
                "events": self.events[-20:], "topic": self.settings.kafka.topic}

    def scale(self, n: int) -> dict[str, Any]:
        if n < 1:
            raise StreamError(f"cannot scale to {n} workers: at least 1")
        with self._lock:
            self.desired = n
            self._reconcile()
            return self.assignment()

    def worker_handles(self) -> dict[str, ActorHandle]:
        with self._lock:
            return {w: s.handle for w, s in self.workers.items()}

    def stop(self) -> dict[str, Any]:
        """Stop reconciling, let every worker checkpoint and close, then kill them."""
        self._stopping.set()
        self._monitor.join(timeout=30)
        with self._lock:
            slots = list(self.workers.values())
            refs = {s.worker_id: s.handle.stop.remote() for s in slots}
            final = {}
            for worker_id, ref in refs.items():
                try:
                    final[worker_id] = ray.get(ref, timeout=CALL_TIMEOUT_S)
                except (RayActorError, GetTimeoutError) as err:
                    final[worker_id] = {"error": type(err).__name__}
            for slot in slots:
                ray.kill(slot.handle, no_restart=True)
            self.workers.clear()
            self.metrics.workers_alive(0)
            return final

    # Reconciliation --------------------------------------------------------------------------

    def _monitor_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._lock:
                    if not self._stopping.is_set():
                        self._reconcile()
            except Exception as err:  # the supervisor must outlive any one failure
                log.error("supervisor: reconciliation failed, retrying: %s: %s", type(err).__name__, err)
            self._stopping.wait(self.settings.stream.health_check_s)

    def _reconcile(self) -> None:
        changed = self._refresh_partitions()
        dead = self._find_dead()
        if dead:
            for worker_id in dead:
                slot = self.workers.pop(worker_id)
                self._event(f"worker {worker_id} on node {slot.node_id[:8]} died; partitions {slot.partitions} "
                            "move to the survivors")
                self.restarts += 1
            changed = True
            if self.workers:
                self._apply(plan_assignment(self.partitions, self._current()))
        if len(self.workers) < self.desired and time.monotonic() >= self._spawn_backoff_until:
            changed |= self._spawn(self.desired - len(self.workers))
        elif len(self.workers) > self.desired:
            extra = sorted(self.workers, key=lambda w: (len(self.workers[w].partitions), w))[
                : len(self.workers) - self.desired]
            keep = {w: s.partitions for w, s in self.workers.items() if w not in extra}
            self._apply(plan_assignment(self.partitions, keep) | {w: [] for w in extra})
            for worker_id in extra:
                slot = self.workers.pop(worker_id)
                with contextlib.suppress(RayActorError, GetTimeoutError):
                    ray.get(slot.handle.stop.remote(), timeout=CALL_TIMEOUT_S)
                ray.kill(slot.handle, no_restart=True)
                self._event(f"worker {worker_id} removed (scale to {self.desired})")
            changed = True
        if changed and self.workers:
            self._apply(plan_assignment(self.partitions, self._current()))
        self.metrics.workers_alive(len(self.workers))

    def _current(self) -> dict[str, list[int]]:
        return {w: list(s.partitions) for w, s in self.workers.items()}

    def _refresh_partitions(self) -> bool:
        if time.monotonic() < self._next_partition_check:
            return False
        self._next_partition_check = time.monotonic() + PARTITION_RECHECK_S
        count = partition_count(self.bootstrap_servers, self.settings.kafka.topic)
        if count == 0:
            log.warning("supervisor: topic %s does not exist on %s yet", self.settings.kafka.topic,
                        self.bootstrap_servers)
            self._next_partition_check = time.monotonic() + 1.0
            return False
        if count != len(self.partitions):
            self._event(f"topic {self.settings.kafka.topic} has {count} partitions")
            self.partitions = list(range(count))
            return True
        return False

    def _find_dead(self) -> list[str]:
        refs = {w: s.handle.status.remote() for w, s in self.workers.items()}
        if refs:
            ray.wait(list(refs.values()), num_returns=len(refs), timeout=STATUS_TIMEOUT_S)
        dead = []
        for worker_id, ref in refs.items():
            try:
                idle = ray.get(ref, timeout=0.1).get("loop_idle_s", 0.0)
                if idle > STUCK_LOOP_S:
                    log.warning("supervisor: worker %s has not finished a loop iteration for %.0f s; replacing it",
                                worker_id, idle)
                    ray.kill(self.workers[worker_id].handle, no_restart=True)
                    dead.append(worker_id)
            except RayActorError as err:
                log.warning("supervisor: worker %s is dead: %s", worker_id, str(err).splitlines()[0])
                dead.append(worker_id)
            except GetTimeoutError:
                pass  # busy (e.g. restoring a large snapshot), not dead
            except Exception as err:  # its loop stopped: replace it
                log.warning("supervisor: worker %s is broken, replacing it: %s", worker_id, err)
                ray.kill(self.workers[worker_id].handle, no_restart=True)
                dead.append(worker_id)
        return dead

    def _spawn(self, n: int) -> bool:
        started: list[WorkerSlot] = []
        for _ in range(n):
            self._counter += 1
            worker_id = f"{self.name}-w{self._counter}"
            # SPREAD puts workers on different nodes, so losing one node loses few partitions.
            handle = PartitionWorker.options(
                num_cpus=self.settings.stream.worker_num_cpus, scheduling_strategy="SPREAD", max_restarts=0,
            ).remote(self.settings, self.bootstrap_servers, worker_id)
            started.append(WorkerSlot(worker_id, handle))
        ok = False
        for slot in started:
            try:
                info = ray.get(slot.handle.ready.remote(), timeout=WORKER_READY_TIMEOUT_S)
            except (RayActorError, GetTimeoutError) as err:
                log.error("supervisor: worker %s did not start (%s); retrying in 10 s", slot.worker_id,
                          type(err).__name__)
                ray.kill(slot.handle, no_restart=True)
                self._spawn_backoff_until = time.monotonic() + 10
                continue
            slot.node_id = info["node_id"]
            self.workers[slot.worker_id] = slot
            self._event(f"worker {slot.worker_id} started on node {slot.node_id[:8]}")
            ok = True
        return ok

    def _apply(self, plan: dict[str, list[int]]) -> None:
        """Release before acquiring, so a partition never has two owners."""
        def call(targets: dict[str, list[int]]) -> None:
            refs = {w: self.workers[w].handle.assign.remote(ps) for w, ps in targets.items() if w in self.workers}
            for worker_id, ref in refs.items():
                try:
                    self.workers[worker_id].partitions = ray.get(ref, timeout=CALL_TIMEOUT_S)
                except (RayActorError, GetTimeoutError) as err:
                    log.warning("supervisor: assign to %s failed (%s); fixed on the next check", worker_id,
                                type(err).__name__)

        releases = {w: [p for p in self.workers[w].partitions if p in set(ps)]
                    for w, ps in plan.items() if w in self.workers}
        call({w: ps for w, ps in releases.items() if ps != self.workers[w].partitions})
        call({w: ps for w, ps in plan.items() if w in self.workers and ps != self.workers[w].partitions})

    def _event(self, text: str) -> None:
        log.info("supervisor: %s", text)
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")
        del self.events[:-100]


# Entry points ------------------------------------------------------------------------------------


def resolve_paths(settings: Settings) -> Settings:
    """Make local data paths absolute once, so every actor agrees wherever its process runs."""
    def absolute(value: str) -> str:
        return value if "://" in value else str(Path(value).resolve())

    stream = settings.stream.model_copy(update={
        "checkpoint_dir": absolute(settings.stream.checkpoint_dir), "lake_dir": absolute(settings.stream.lake_dir)})
    train = settings.train.model_copy(update={"registry_dir": absolute(settings.train.registry_dir)})
    return settings.model_copy(update={"stream": stream, "train": train})


def get_stream(settings: Settings) -> ActorHandle | None:
    try:
        return ray.get_actor(settings.stream.supervisor_name, namespace=settings.ray.namespace)
    except ValueError:
        return None


def start_stream(settings: Settings, bootstrap_servers: str, *, timeout_s: float = 120.0) -> ActorHandle:
    """Start the detached supervisor (and through it the workers); returns once every partition is owned.

    Raises ``ingest.broker.BrokerUnreachable`` within seconds (bounded retries with backoff)
    when nothing listens at ``bootstrap_servers``, before any actor is started.
    """
    if not ray.is_initialized():
        raise StreamError("connect to Ray first (ray.init with an explicit address)")
    wait_reachable(bootstrap_servers)
    if get_stream(settings) is not None:
        raise StreamError(f"a stream named {settings.stream.supervisor_name!r} is already running in namespace "
                          f"{settings.ray.namespace!r}; stop it first")
    settings = resolve_paths(settings)
    supervisor = StreamSupervisor.options(
        name=settings.stream.supervisor_name, namespace=settings.ray.namespace, lifetime="detached",
        # On the head node: a worker node's loss must not take the supervisor with it.
        resources={HEAD_NODE_RESOURCE: 0.001}, max_restarts=3, max_task_retries=0,
    ).remote(settings, bootstrap_servers)
    try:
        ray.get(supervisor.wait_ready.remote(timeout_s), timeout=timeout_s + 10)
    except Exception:
        ray.kill(supervisor, no_restart=True)
        raise
    return supervisor


def stream_status(settings: Settings, timeout_s: float = 60.0) -> dict[str, Any] | None:
    supervisor = get_stream(settings)
    return None if supervisor is None else ray.get(supervisor.status.remote(), timeout=timeout_s)


def scale_stream(settings: Settings, workers: int, timeout_s: float = 300.0) -> dict[str, Any]:
    supervisor = get_stream(settings)
    if supervisor is None:
        raise StreamError(f"no stream named {settings.stream.supervisor_name!r} in namespace "
                          f"{settings.ray.namespace!r}")
    ray.get(supervisor.scale.remote(workers), timeout=timeout_s)
    return ray.get(supervisor.wait_ready.remote(timeout_s), timeout=timeout_s + 10)


def stop_stream(settings: Settings, timeout_s: float = 180.0) -> dict[str, Any] | None:
    """Checkpoint and stop every worker, then the supervisor; None if no stream was running."""
    supervisor = get_stream(settings)
    if supervisor is None:
        return None
    try:
        final = ray.get(supervisor.stop.remote(), timeout=timeout_s)
    finally:
        ray.kill(supervisor, no_restart=True)
    return final


def lag_summary(status: dict[str, Any]) -> dict[int, int | None]:
    """Partition -> lag from a status answer (None where the worker did not report)."""
    out: dict[int, int | None] = {}
    for worker in status.get("workers", {}).values():
        for p, info in (worker.get("partitions") or {}).items():
            out[int(p)] = info.get("lag")
    return dict(sorted(out.items()))


def total_lag(status: dict[str, Any]) -> int:
    return sum(v for v in lag_summary(status).values() if v is not None and not math.isnan(v))
