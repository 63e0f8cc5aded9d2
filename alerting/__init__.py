"""The alert service: what happens to an alert after the stream raises it.

The stream's detection ends on the ``smoke_alerts`` topic. This package is the
last mile to a person: a durable store of every alert event and incident
(SQLite by default, PostgreSQL in production), the lifecycle an operator drives
(raised, acknowledged, cleared, resolved; escalation; silences), the routing of
notifications to delivery channels (webhook, Alertmanager, email) and the
router that reads the topic and is the only writer of alert events.

It imports only ``ingest`` (settings, and the alert message it reads,
``ingest.alert_message``); ``serve`` (the operator API and console) and
``cluster`` (commands, stack) import it; ``train`` never does. See
docs/architecture.md.
"""
