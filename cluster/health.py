"""``smoke status``: the health of each part of the recorded stack, checked live.

Every check is independent and returns a :class:`Check` (part, healthy or not,
one line of detail): a part that is down never hides the state of the others.
Ray-side checks (stream, Serve) share one driver connection, made only when the
GCS port answers, because ``ray.init`` against a dead address waits about 20 s.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from cluster.stack_state import StackState
from ingest.broker import port_open
from ingest.settings import KafkaSecuritySettings, Settings

ALERT_WINDOW_S = 300.0


@dataclass(frozen=True)
class Check:
    part: str
    healthy: bool | None  # None: not part of this stack (skipped, unavailable) or not checkable
    detail: str


def check_stack(settings: Settings, state: StackState, alert_window_s: float = ALERT_WINDOW_S) -> list[Check]:
    from cluster.ray_driver import disconnect_driver
    from cluster.stack import with_stack

    settings = with_stack(settings, state)
    checks = [check_ray(state), check_broker(state, settings.kafka.security)]
    ray_up = checks[0].healthy
    checks.append(check_stream(settings, state) if ray_up else _unreachable("stream", state.stream_name))
    checks.append(check_serve(settings, state) if ray_up else _unreachable("serve", state.serve_app))
    checks.append(check_router(settings, state) if ray_up else _unreachable("router", state.router_name))
    checks.append(check_operator(settings, state) if ray_up else _unreachable("operator", state.operator_app))
    checks.append(check_model(settings))
    checks.append(check_alerts(settings, state, alert_window_s) if checks[1].healthy
                  else Check("alerts", None, "Kafka is not reachable"))
    checks.append(check_mqtt_bridge(state))
    checks.append(check_simulator(state))
    checks.append(check_metrics(state))
    disconnect_driver()
    return checks


def check_ray(state: StackState) -> Check:
    address = state.ray_address or ""
    host, _, port = address.rpartition(":")
    if state.ray_session_id is not None and not state.ray_running():
        return Check("ray", False, f"the head started by `smoke up` is gone (session {state.ray_session_id})")
    if not port.isdigit() or not port_open(host, int(port), timeout=2.0):
        return Check("ray", False, f"GCS at {address} does not accept connections")
    try:
        import ray

        from cluster.ray_driver import connect_driver

        connect_driver(state.ray_address, state.namespace)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = ray.cluster_resources().get("CPU", 0)
        free = ray.available_resources().get("CPU", 0)
    except Exception as err:
        return Check("ray", False, f"GCS at {address} answers but the driver cannot connect: {err}")
    where = f"head session {state.ray_session_id}" if state.ray_session_id else "existing cluster"
    return Check("ray", True, f"{address} ({where}): {len(nodes)} node(s), {free:g}/{cpus:g} CPUs free, "
                              f"dashboard {state.dashboard_url or 'n/a'}")


def check_broker(state: StackState, security: KafkaSecuritySettings | None = None) -> Check:
    bootstrap = state.bootstrap_servers or ""
    reachable = any(port_open(h, int(p), timeout=2.0) for h, _, p in
                    (server.rpartition(":") for server in bootstrap.split(",")) if p.isdigit())
    if not reachable:
        return Check("kafka", False, f"{bootstrap or 'no broker recorded'} does not accept connections")
    try:
        from ingest.broker import partition_count

        parts = {topic: partition_count(bootstrap, topic, security=security) for topic in state.topics}
    except Exception as err:
        return Check("kafka", False, f"{bootstrap} accepts connections but metadata fails: {err}")
    missing = [t for t, n in parts.items() if n == 0]
    kind = f"embedded broker pid {state.broker_pid}" if state.broker_pid else "external"
    if missing:
        return Check("kafka", False, f"{bootstrap} ({kind}): topics missing: {', '.join(missing)}")
    return Check("kafka", True, f"{bootstrap} ({kind}): " + ", ".join(f"{t} x{n}" for t, n in parts.items()))


def check_stream(settings: Settings, state: StackState) -> Check:
    if not state.stream_name:
        return _not_started("stream", state)
    from actors.supervisor import stream_status, total_lag

    try:
        status = stream_status(settings, timeout_s=30.0)
    except Exception as err:
        return Check("stream", False, f"supervisor {state.stream_name!r} does not answer: {err}")
    if status is None:
        return Check("stream", False, f"supervisor {state.stream_name!r} is not running")
    workers = status["workers"]
    broken = [w for w, info in workers.items() if "error" in info]
    processed = sum(info.get("totals", {}).get("processed", 0) for info in workers.values())
    healthy = len(workers) == status["desired"] and not broken
    return Check("stream", healthy, f"{len(workers) - len(broken)}/{status['desired']} workers alive, "
                                    f"lag {total_lag(status)}, {processed} readings processed, "
                                    f"{status['restarts']} restarts")


def check_serve(settings: Settings, state: StackState) -> Check:
    if not state.serve_app:
        return _not_started("serve", state)
    from serve.deployment import serve_status

    try:
        status = serve_status(settings)
    except Exception as err:
        return Check("serve", False, f"cannot read Serve's status: {err}")
    replicas = {}
    for deployment in status["deployments"].values():
        for replica_state, count in deployment["replicas"].items():
            replicas[replica_state] = replicas.get(replica_state, 0) + count
    health = _get_json(f"{state.serve_url}/health")
    model = health.get("model_version") if isinstance(health, dict) else None
    healthy = status["status"] == "RUNNING" and isinstance(health, dict) and health.get("status") == "healthy"
    replica_text = ", ".join(f"{n} {s.lower()}" for s, n in sorted(replicas.items())) or "no replicas"
    return Check("serve", healthy, f"{status['status']} at {state.serve_url}: {replica_text}; "
                                   f"model {model or 'none loaded'}"
                  + (f"; /health says {health.get('status')}" if isinstance(health, dict) else "; /health fails"))


def check_router(settings: Settings, state: StackState) -> Check:
    """The alert router: running, its loop turning, no recent error (alerting.router.health)."""
    if not state.router_name:
        return _not_started("router", state)
    from alerting.router import health, router_status

    try:
        status = router_status(settings)
    except Exception as err:
        return Check("router", False, f"down: router {state.router_name!r} does not answer: {_first_line(err)}")
    healthy, detail = health(status, settings.alerting.router_stale_s)
    return Check("router", healthy, detail if status is not None
                 else f"down: router {state.router_name!r} is not running")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def check_operator(settings: Settings, state: StackState) -> Check:
    """The operator API answers /health and can read the alert store; the console page is served; with the
    alert service's KPIs (open and unacknowledged incidents, unwanted alarms, time to acknowledge)."""
    if not state.operator_app:
        return _not_started("operator", state)
    health = _get_json(f"{state.operator_url}/health")
    if not isinstance(health, dict):
        return Check("operator", False, f"{state.operator_url}/health does not answer")
    console = _get_status(f"{state.console_url}/") if state.console_url else None
    healthy = health.get("status") == "healthy" and console == 200
    keys = settings.serve.api_keys
    kpis = _get_json(f"{state.operator_url}/kpis", {"X-API-Key": keys[0]} if keys else None) if healthy else None
    return Check("operator", healthy, f"API at {state.operator_url}: {health.get('status')} (store "
                                      f"{health.get('store')}); console at {state.console_url}/: "
                                      + (f"HTTP {console}" if console else "does not answer")
                                      + (f"; {kpi_summary(kpis)}" if isinstance(kpis, dict) else ""))


def kpi_summary(kpis: dict[str, Any]) -> str:
    """One line of the alert service's KPIs (``GET /ops/kpis``); figures without data say so, never 0.

    >>> kpi_summary({"open_incidents": 2, "unacknowledged": 1, "unwanted_per_100_detectors_per_year": 4.0,
    ...              "flagged_devices": ["s1"], "ack_time_p50_s": 42.0, "ack_time_p95_s": None})
    '2 open incidents, 1 unacknowledged; 4.0 unwanted alarms/100 detectors/year, 1 devices flagged; ack p50 42 s, p95 -'
    """
    def seconds(value: Any) -> str:
        return "-" if value is None else f"{value:.0f} s"

    rate = kpis.get("unwanted_per_100_detectors_per_year")
    return (f"{kpis.get('open_incidents')} open incidents, {kpis.get('unacknowledged')} unacknowledged; "
            f"{'-' if rate is None else f'{rate:.1f}'} unwanted alarms/100 detectors/year, "
            f"{len(kpis.get('flagged_devices') or [])} devices flagged; "
            f"ack p50 {seconds(kpis.get('ack_time_p50_s'))}, p95 {seconds(kpis.get('ack_time_p95_s'))}")


def check_model(settings: Settings) -> Check:
    from cluster.initial_model import production_version

    try:
        version = production_version(settings)
    except Exception as err:
        return Check("model", False, f"cannot read the registry {settings.train.registry_dir}: {err}")
    if version is None:
        return Check("model", False, f"no production model in {settings.train.registry_dir}")
    return Check("model", True, f"{settings.train.model_name} production {version} ({settings.train.registry_dir})")


def check_alerts(settings: Settings, state: StackState, window_s: float) -> Check:
    try:
        alerts = recent_alerts(state.bootstrap_servers or "", settings.kafka.alerts_topic, window_s,
                               security=settings.kafka.security)
    except Exception as err:
        return Check("alerts", None, f"cannot read {settings.kafka.alerts_topic}: {err}")
    raised = [a for a in alerts if a.get("state") == "raised"]
    by_kind: dict[str, int] = {}
    for alert in raised:
        key = f"{alert.get('kind')}/{alert.get('severity')}"
        by_kind[key] = by_kind.get(key, 0) + 1
    summary = ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())) or "none raised"
    cleared = len(alerts) - len(raised)
    return Check("alerts", True, f"last {window_s / 60:g} min: {summary}; {cleared} cleared")


def recent_alerts(bootstrap: str, topic: str, window_s: float, max_records: int = 100_000,
                  security: KafkaSecuritySettings | None = None) -> list[dict[str, Any]]:
    """The alert messages of the last ``window_s`` seconds (decoded JSON), read with ``assign``, no group."""
    from kafka import TopicPartition

    from ingest.kafka_clients import consumer as kafka_consumer

    consumer = kafka_consumer(bootstrap, security, enable_auto_commit=False, group_id=None,
                              client_id="smoke-status", request_timeout_ms=10_000)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        since_ms = int((time.time() - window_s) * 1000)
        starts = consumer.offsets_for_times({tp: since_ms for tp in tps})
        for tp in tps:
            start = starts.get(tp)
            if start is None:
                consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, start.offset)
        alerts: list[dict[str, Any]] = []
        empty_polls = 0
        # Never loop "until the end offset" (it under-reports on the embedded broker): stop when polls run dry.
        while empty_polls < 2 and len(alerts) < max_records:
            batch = consumer.poll(timeout_ms=500)
            if not batch:
                empty_polls += 1
                continue
            empty_polls = 0
            for records in batch.values():
                for record in records:
                    if record.timestamp >= since_ms:
                        try:
                            alerts.append(json.loads(record.value))
                        except (TypeError, ValueError):
                            continue
        return alerts
    finally:
        consumer.close()


def check_simulator(state: StackState) -> Check:
    if state.simulator_pid is None:
        return _not_started("simulator", state)
    if state.simulator_running():
        return Check("simulator", True, f"pid {state.simulator_pid}, log {state.simulator_log}")
    return Check("simulator", None, f"finished (pid {state.simulator_pid}); log {state.simulator_log}")


def check_mqtt_bridge(state: StackState) -> Check:
    """The bridge's own /health: ok, or degraded with its causes (MQTT down, Kafka refusing, a stalled message)."""
    if state.bridge_pid is None:
        return _not_started("mqtt_bridge", state)
    if not state.bridge_running():
        return Check("mqtt_bridge", False, f"pid {state.bridge_pid} is gone; see {state.bridge_log}")
    try:
        with urllib.request.urlopen(state.bridge_health_url, timeout=5) as response:
            doc = json.loads(response.read())
    except urllib.error.HTTPError as err:  # 503: degraded, the body says why
        doc = json.loads(err.read() or b"{}")
    except (OSError, ValueError) as err:
        return Check("mqtt_bridge", False, f"{state.bridge_health_url} does not answer: {err}")
    detail = f"{doc.get('status')}: {doc.get('mqtt')} -> Kafka, {doc.get('pending')} pending"
    if doc.get("causes"):
        detail += "; " + "; ".join(doc["causes"])
    return Check("mqtt_bridge", doc.get("status") == "ok", detail)


def check_metrics(state: StackState) -> Check:
    if not state.metrics_url:
        return Check("metrics", None, "not exported by this stack (existing Ray cluster)")
    try:
        with urllib.request.urlopen(state.metrics_url, timeout=5) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError as err:
        return Check("metrics", False, f"{state.metrics_url} does not answer: {err}")
    ours = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines()
            if line.startswith("ray_smoke_")}
    return Check("metrics", True, f"{state.metrics_url}: {len(ours)} smoke metric series names")


def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    """The JSON body, also of an error answer (a 503 /health says why); None when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            return json.loads(err.read())
        except (OSError, ValueError):
            return None
    except (OSError, ValueError):
        return None


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def _not_started(part: str, state: StackState) -> Check:
    return Check(part, None, state.unavailable.get(part, "not started by `smoke up`"))


def _unreachable(part: str, name: str | None) -> Check:
    return Check(part, False if name else None, "Ray is down" if name else "not started by `smoke up`")

