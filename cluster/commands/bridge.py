"""``smoke bridge mqtt``: run the MQTT -> Kafka bridge (:mod:`ingest.mqtt_bridge`) until Ctrl-C or SIGTERM.

Kafka is found as for ``smoke simulate`` (``--bootstrap-servers``, the settings, the
embedded broker); the MQTT broker and topics come from the ``mqtt`` settings, which
the flags override. As a Ray job: ``ray job submit --address http://HEAD:8265 --
smoke bridge mqtt --bootstrap-servers kafka:9092``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

from cluster.embedded_broker import resolve_bootstrap


def register(subparsers: argparse._SubParsersAction) -> None:
    bridge = subparsers.add_parser("bridge", help="bridges from device protocols into Kafka")
    kind = bridge.add_subparsers(dest="bridge_command", metavar="PROTOCOL", required=True)
    mqtt = kind.add_parser("mqtt", help="MQTT topics -> the readings topic (QoS 1, acknowledged once in Kafka)")
    mqtt.add_argument("--host", help="MQTT broker host (default mqtt.host)")
    mqtt.add_argument("--port", type=int, help="MQTT broker port (default mqtt.port)")
    mqtt.add_argument("--topic", action="append", dest="topics", metavar="FILTER",
                      help="topic filter, repeatable (default mqtt.topics)")
    mqtt.add_argument("--metrics-port", type=int, help="port of /metrics and /health (default mqtt.metrics_port)")
    mqtt.add_argument("--bootstrap-servers", help="Kafka host:port")
    mqtt.set_defaults(func=_mqtt)


def _mqtt(args: argparse.Namespace) -> int:
    from ingest.broker import BrokerError
    from ingest.mqtt_bridge import BridgeError, MqttBridge

    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its per-connection lines; ours say what failed
    settings = args.settings
    overrides = {"host": args.host, "port": args.port, "topics": args.topics, "metrics_port": args.metrics_port}
    config = settings.mqtt.model_validate({**settings.mqtt.model_dump(),
                                           **{k: v for k, v in overrides.items() if v is not None}})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        bootstrap = resolve_bootstrap(settings, args.bootstrap_servers, "bridge mqtt")
        bridge = MqttBridge(config, settings.kafka, bootstrap)
        bridge.start()
    except (BrokerError, BridgeError) as err:
        print(f"smoke bridge mqtt: {err}", file=sys.stderr)
        return 1
    # One write with its newline: `smoke up` reads this line from a log that the bridge's logging
    # (stderr, same file) also writes to, and a line split in two writes could be cut by a log record.
    sys.stdout.write(f"bridging mqtt://{config.host}:{config.port} {', '.join(config.topics)} -> "
                     f"{settings.kafka.topic} on {bootstrap}; metrics and health on "
                     f"http://{config.metrics_host}:{bridge.http_port}\n")
    sys.stdout.flush()
    # On Ctrl-C run() has closed the bridge too: what was received is in Kafka, the rest stays with MQTT.
    with contextlib.suppress(KeyboardInterrupt):
        bridge.run(stop)
    return 0
