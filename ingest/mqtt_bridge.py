"""The MQTT -> Kafka bridge: device readings published over MQTT, produced to the readings topic.

Most sensor kits (ESP32 boards like the one that recorded the Kaggle data, Zigbee2MQTT,
LoRaWAN network servers) publish over MQTT. :class:`MqttBridge` subscribes to
``mqtt.topics`` at QoS 1 with a persistent session (``clean_session=False`` under a fixed
``mqtt.client_id``), and for each message:

1. takes the sensor id from the topic level ``mqtt.sensor_id_level`` or the payload
   (:func:`reading_of_payload`; a payload id that disagrees with the topic is refused);
2. accepts our schema, the original project's field names and the Kaggle CSV headers
   (``UTC`` as the time), and validates with :func:`ingest.validation.validate_records`,
   the stream's own validation, so what the bridge forwards the stream accepts;
3. produces the reading in our schema to ``kafka.topic`` keyed by sensor id, or the raw
   payload to ``kafka.dlq_topic`` with the reasons and the MQTT topic in headers;
4. acknowledges the message to the MQTT broker (PUBACK, in the order received as MQTT
   requires) only once Kafka has accepted the record (``acks=all``).

So a bridge killed at any point loses nothing: what Kafka had not accepted was not
acknowledged, and the broker sends it again to the same session. The price is a
duplicate of what Kafka had accepted but the bridge had not yet acknowledged; such a
record carries the header ``mqtt_dup=1`` when the broker marked the delivery as a
repeat, and is the same reading (sensor id and time) as the first copy.

Prometheus metrics and a JSON health document are served on
``mqtt.metrics_host:metrics_port`` (``/metrics``, ``/health``); health is ``degraded``
with its cause while the MQTT connection is down or a message waits longer than
``mqtt.stalled_after_s`` for Kafka.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ingest.broker import wait_reachable
from ingest.schema import (
    KAGGLE_COUNTER,
    KAGGLE_LABEL,
    KAGGLE_TIMESTAMP,
    MAX_MESSAGE_BYTES,
    MEASUREMENTS,
    SENSOR_ID,
    TIMESTAMP,
    Reason,
)
from ingest.settings import KafkaSettings, MqttSettings
from ingest.validation import Problem, dead_letter_headers, decode_messages, validate_records

log = logging.getLogger(__name__)

# Kaggle CSV columns that are not part of a reading: the row index, the sample counter and the label.
_KAGGLE_EXTRAS = ("", KAGGLE_COUNTER, KAGGLE_LABEL)
RETRY_FIRST_DELAY_S = 0.2
RETRY_MAX_DELAY_S = 10.0


class BridgeError(RuntimeError):
    """The bridge cannot start (settings, broker refused the connection); the message says why."""


def sensor_id_of_topic(topic: str, level: int | None) -> str | None:
    """The sensor id at ``level`` of an MQTT topic (None without a level or when the topic is shorter).

    >>> sensor_id_of_topic("sites/lab/sensors/esp32-7/reading", 3), sensor_id_of_topic("a/b", 5)
    ('esp32-7', None)
    """
    if level is None:
        return None
    parts = topic.split("/")
    return parts[level] if level < len(parts) and parts[level] else None


def reading_of_payload(doc: object, topic_sensor_id: str | None) -> tuple[object, list[Problem]]:
    """A decoded payload as the reading validation expects, and the problems of its identity.

    The Kaggle headers' ``UTC`` is the time, its index, counter and label columns are not
    part of a reading; the measurements' other spellings are validation's business
    (:data:`ingest.schema.ALIASES`). The topic's sensor id fills a payload without one.

    >>> reading_of_payload({"UTC": 1654733331, "CNT": 3, "Fire Alarm": 1, "Temperature[C]": 20.0}, "s1")
    ({'Temperature[C]': 20.0, 'timestamp': 1654733331, 'sensor_id': 's1'}, [])
    >>> reading_of_payload({"sensor_id": "s2"}, "s1")[1][0].detail
    "payload sensor_id 's2' is not the topic's 's1'"
    """
    if not isinstance(doc, dict):
        return doc, []  # validation names it: not_object
    reading = {key: value for key, value in doc.items() if key not in _KAGGLE_EXTRAS and key != KAGGLE_TIMESTAMP}
    if TIMESTAMP not in reading and KAGGLE_TIMESTAMP in doc:
        reading[TIMESTAMP] = doc[KAGGLE_TIMESTAMP]
    problems = []
    if topic_sensor_id is not None:
        payload_id = reading.get(SENSOR_ID)
        if payload_id is None:
            reading[SENSOR_ID] = topic_sensor_id
        elif payload_id != topic_sensor_id:
            problems.append(Problem(SENSOR_ID, Reason.BAD_SENSOR_ID,
                                    f"payload sensor_id {payload_id!r} is not the topic's {topic_sensor_id!r}"))
    return reading, problems


@dataclass
class Delivery:
    """One MQTT message on its way to Kafka; acknowledged to MQTT once ``future`` succeeded."""

    mid: int
    qos: int
    session: int  # the MQTT connection it came on: a PUBACK on a later connection would ack another message
    topic: str
    payload: bytes
    dup: bool
    received: float  # time.monotonic()
    record: tuple[str, bytes | None, bytes, list[tuple[str, bytes]]] | None = None  # (topic, key, value, headers)
    future: Any = None
    attempts: int = 0
    retry_at: float = 0.0


class BridgeMetrics:
    """The bridge's Prometheus series, in a registry of its own (served on /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("smoke_mqtt_received", "MQTT messages received", registry=r)
        self.forwarded = Counter("smoke_mqtt_forwarded", "readings accepted by Kafka and acknowledged", registry=r)
        self.rejected = Counter("smoke_mqtt_rejected", "messages sent to the dead-letter topic, by reason",
                                ["reason"], registry=r)
        self.resent = Counter("smoke_mqtt_kafka_resent", "Kafka sends retried after a failure", registry=r)
        self.connected = Gauge("smoke_mqtt_connected", "1 while connected to the MQTT broker", registry=r)
        self.reconnects = Counter("smoke_mqtt_connects", "successful MQTT connections", registry=r)
        self.pending = Gauge("smoke_mqtt_pending", "messages received and not yet accepted by Kafka", registry=r)
        self.lag = Gauge("smoke_mqtt_lag_seconds", "age of the oldest message not yet accepted by Kafka",
                         registry=r)
        self.latency = Histogram("smoke_mqtt_forward_latency_seconds", "MQTT receipt to Kafka acceptance",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                 registry=r)
        self.healthy = Gauge("smoke_mqtt_healthy", "1 when /health says ok", registry=r)


class MqttBridge:
    """Subscribe, validate, produce, acknowledge; see the module docstring. ``run`` until ``stop`` is set."""

    def __init__(self, mqtt_settings: MqttSettings, kafka: KafkaSettings, bootstrap_servers: str) -> None:
        self.config = mqtt_settings
        self.kafka = kafka
        self.bootstrap_servers = bootstrap_servers
        self.metrics = BridgeMetrics()
        self._inbox: queue.Queue[Delivery] = queue.Queue()
        self._pending: deque[Delivery] = deque()
        self._session = 0
        self._connected = False
        self._disconnect_cause: str | None = "not connected yet"
        self._kafka_error: str | None = None
        self._lock = threading.Lock()
        self._http: ThreadingHTTPServer | None = None
        self._closing = False
        self.settled = 0  # messages whose record Kafka accepted (readings and dead letters)
        self.producer = self._new_producer()
        self.client = self._new_client()

    # --- clients ---------------------------------------------------------------------------------

    def _new_producer(self) -> KafkaProducer:
        wait_reachable(self.bootstrap_servers)  # one clear line within seconds, not kafka-python's long bootstrap
        try:
            return KafkaProducer(bootstrap_servers=self.bootstrap_servers, client_id=self.config.client_id,
                                 acks="all", linger_ms=self.config.linger_ms, retries=5,
                                 request_timeout_ms=10_000, max_block_ms=10_000)
        except KafkaError as err:
            raise BridgeError(f"cannot reach Kafka at {self.bootstrap_servers}: {err!r}") from None

    def _new_client(self) -> mqtt.Client:
        config = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id, clean_session=False,
                             protocol=mqtt.MQTTv311, manual_ack=True)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            try:
                client.tls_set(ca_certs=str(config.tls_ca_file) if config.tls_ca_file else None,
                               certfile=str(config.tls_cert_file) if config.tls_cert_file else None,
                               keyfile=str(config.tls_key_file) if config.tls_key_file else None,
                               cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as err:
                raise BridgeError(f"mqtt TLS files: {err}") from None
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(config.reconnect_max_delay_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # --- MQTT callbacks (paho's network thread) --------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            with self._lock:
                self._disconnect_cause = f"the MQTT broker refused the connection: {reason}"
            log.error("mqtt: %s:%d refused the connection: %s", self.config.host, self.config.port, reason)
            return
        with self._lock:
            self._session += 1
            self._connected = True
            self._disconnect_cause = None
        self.metrics.connected.set(1)
        self.metrics.reconnects.inc()
        client.subscribe([(topic, 1) for topic in self.config.topics])
        log.info("mqtt: connected to %s:%d (session %s), subscribed to %s", self.config.host, self.config.port,
                 "resumed" if flags.session_present else "new", ", ".join(self.config.topics))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self._connected = False
            self._disconnect_cause = f"disconnected from the MQTT broker: {reason}"
        self.metrics.connected.set(0)
        if self._closing:
            return
        log.warning("mqtt: disconnected from %s:%d (%s); reconnecting", self.config.host, self.config.port, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put(Delivery(message.mid, message.qos, self._session, message.topic, message.payload,
                                 bool(message.dup), time.monotonic()))

    # --- the loop --------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve /metrics and /health, and connect (paho reconnects by itself from then on)."""
        self._http = serve_http(self.config.metrics_host, self.config.metrics_port, self.metrics.registry,
                                self.health)
        try:
            self.client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        except (OSError, ssl.SSLError) as err:
            self.close()
            raise BridgeError(f"cannot connect to the MQTT broker at {self.config.host}:{self.config.port}: "
                              f"{err}") from None
        self.client.loop_start()

    @property
    def http_port(self) -> int:
        return self._http.server_address[1] if self._http else 0

    def run(self, stop: threading.Event) -> None:
        """After :meth:`start`: forward until ``stop`` is set, then :meth:`close`."""
        try:
            while not stop.is_set():
                self.step(timeout_s=0.05)
        finally:
            self.close()

    def step(self, timeout_s: float) -> None:
        """Take what arrived, send it to Kafka, acknowledge what Kafka accepted, retry what failed."""
        batch: list[Delivery] = []
        try:
            batch.append(self._inbox.get(timeout=timeout_s))
            while len(batch) < self.config.batch_max:
                batch.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        if batch:
            self._route(batch)
        self._settle()
        now = time.monotonic()
        self.metrics.pending.set(len(self._pending) + self._inbox.qsize())
        self.metrics.lag.set(now - self._pending[0].received if self._pending else 0.0)
        self.metrics.healthy.set(1 if self.health()["status"] == "ok" else 0)

    def _route(self, batch: list[Delivery]) -> None:
        """Validate a batch the stream's way and queue one Kafka record per message."""
        self.metrics.received.inc(len(batch))
        docs, undecodable = decode_messages([d.payload for d in batch])
        refused: dict[int, list[Problem]] = dict(undecodable)
        readings: list[object] = []
        for i, (doc, delivery) in enumerate(zip(docs, batch, strict=True)):
            reading, problems = reading_of_payload(doc, sensor_id_of_topic(delivery.topic,
                                                                           self.config.sensor_id_level))
            readings.append(reading)
            if problems and i not in refused:
                refused[i] = problems
        validated = validate_records(readings, skip=refused)
        refused.update(validated.rejected)
        for k, i in enumerate(validated.index.tolist()):
            delivery, reading = batch[i], readings[i]
            sensor_id = validated.sensor_ids[k]
            value = {SENSOR_ID: sensor_id, TIMESTAMP: reading[TIMESTAMP],
                     **dict(zip(MEASUREMENTS, validated.values[k].tolist(), strict=True))}
            delivery.record = (self.kafka.topic, sensor_id.encode(), orjson.dumps(value),
                               self._headers(delivery))
        for i, problems in refused.items():
            delivery = batch[i]
            for reason in sorted({p.reason for p in problems}):
                self.metrics.rejected.labels(reason).inc()
            delivery.record = (self.kafka.dlq_topic, f"mqtt/{delivery.topic}".encode(),
                               _within_limit(delivery.payload),
                               dead_letter_headers(problems) + self._headers(delivery)
                               + [("source_size", str(len(delivery.payload)).encode()),
                                  ("source_sha256", hashlib.sha256(delivery.payload).hexdigest().encode())])
        for delivery in batch:
            self._send(delivery)
            self._pending.append(delivery)

    @staticmethod
    def _headers(delivery: Delivery) -> list[tuple[str, bytes]]:
        headers = [("source", b"mqtt"), ("mqtt_topic", delivery.topic.encode())]
        if delivery.dup:
            headers.append(("mqtt_dup", b"1"))
        return headers

    def _send(self, delivery: Delivery) -> None:
        topic, key, value, headers = delivery.record
        delivery.attempts += 1
        try:
            delivery.future = self.producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError as err:  # the buffer stayed full or metadata never came: try again later
            delivery.future = None
            self._failed(delivery, err)

    def _failed(self, delivery: Delivery, err: BaseException) -> None:
        delay = min(RETRY_MAX_DELAY_S, RETRY_FIRST_DELAY_S * 2 ** min(delivery.attempts - 1, 10))
        delivery.retry_at = time.monotonic() + delay
        cause = f"{type(err).__name__}: {err}"
        if self._kafka_error != cause:
            log.error("mqtt bridge: Kafka at %s did not accept a record (%s); retrying, nothing is acknowledged "
                      "to MQTT until it does", self.bootstrap_servers, cause)
        with self._lock:
            self._kafka_error = cause

    def _settle(self) -> None:
        """Acknowledge, in order, the messages Kafka accepted; resend the failed ones when due.

        Only the head is inspected while all goes well (acknowledgements are in order anyway);
        once the head has failed, every failed record behind it is resent too, not one by one.
        """
        now = time.monotonic()
        pending = self._pending
        while pending:
            head = pending[0]
            future = head.future
            if future is not None and future.is_done and future.succeeded():
                pending.popleft()
                self._acknowledge(head, now)
                continue
            if future is None or future.is_done:
                self._resend_failed(now)
            break

    def _resend_failed(self, now: float) -> None:
        for delivery in self._pending:
            future = delivery.future
            if future is not None and future.is_done and future.failed():
                delivery.future = None
                self._failed(delivery, future.exception)
            if delivery.future is None and delivery.retry_at <= now:
                self.metrics.resent.inc()
                self._send(delivery)

    def _acknowledge(self, delivery: Delivery, now: float) -> None:
        self.settled += 1
        if delivery.record[0] == self.kafka.topic:
            self.metrics.forwarded.inc()
        self.metrics.latency.observe(now - delivery.received)
        with self._lock:
            self._kafka_error = None
            current = delivery.session == self._session and self._connected
        # A message of an earlier connection is not acknowledged: the broker sends it again on this one.
        if current and delivery.qos > 0:
            self.client.ack(delivery.mid, delivery.qos)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every received message is in Kafka and acknowledged (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while (self._pending or not self._inbox.empty()) and time.monotonic() < deadline:
            self.step(timeout_s=0.01)

    def health(self) -> dict[str, Any]:
        """``ok``, or ``degraded`` with the causes (MQTT connection down, Kafka failing or too slow)."""
        with self._lock:
            causes = [] if self._connected else [self._disconnect_cause or "not connected"]
            if self._kafka_error:
                causes.append(f"Kafka does not accept records: {self._kafka_error}")
        pending = self._pending
        if pending:
            age = time.monotonic() - pending[0].received
            if age > self.config.stalled_after_s:
                causes.append(f"a message has waited {age:.0f} s for Kafka (limit {self.config.stalled_after_s:g} s)")
        return {"status": "degraded" if causes else "ok", "causes": causes,
                "mqtt": f"{self.config.host}:{self.config.port}", "topics": list(self.config.topics),
                "kafka": self.bootstrap_servers, "pending": len(pending) + self._inbox.qsize()}

    def close(self) -> None:
        """Forward what was received, then disconnect; unacknowledged messages stay with the MQTT broker."""
        try:
            self.flush(timeout_s=5.0)
        finally:
            self._closing = True
            self.client.disconnect()
            self.client.loop_stop()
            self.producer.close(timeout=5)
            if self._http is not None:
                self._http.shutdown()
                self._http.server_close()
                self._http = None


def _within_limit(payload: bytes) -> bytes:
    """A dead letter's value: the payload, cut to the stream's message limit (full size and digest: headers)."""
    return payload if len(payload) <= MAX_MESSAGE_BYTES else payload[:MAX_MESSAGE_BYTES]


def serve_http(host: str, port: int, registry: CollectorRegistry,
               health: Callable[[], Mapping[str, Any]]) -> ThreadingHTTPServer:
    """``/metrics`` (Prometheus text) and ``/health`` (JSON; 503 unless ok) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                status, body, kind = 200, generate_latest(registry), CONTENT_TYPE_LATEST
            elif self.path == "/health":
                doc = health()
                status, body, kind = (200 if doc["status"] == "ok" else 503), orjson.dumps(doc), "application/json"
            else:
                status, body, kind = 404, b"not found: /metrics or /health\n", "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per Prometheus scrape would drown the bridge's own log

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as err:
        raise BridgeError(f"cannot serve the bridge's metrics on {host}:{port}: {err}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="mqtt-bridge-http", daemon=True).start()
    return server
