"""The alert store's tables (SQLAlchemy 2 Core), one schema for SQLite and PostgreSQL.

This is the current shape; the migrations in ``alerting/migrations`` build it
(a test compares the migrated database with this metadata, so the two cannot
drift). Times are epoch seconds as floats (SQLite has no time zone aware type;
floats keep both databases alike). Column names avoid SQL keywords (``offset``,
``partition``) so that hand-written queries in psql need no quoting.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Constraint names fixed by convention: Alembic can then alter them on both databases.
metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

ALERT_ID = 64  # alert ids are 32 hex characters; room for ids of other producers
NAME = 200

# Every raised/cleared event as the router read it, with where it was read from.
alert_events = Table(
    "alert_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(ALERT_ID), nullable=False),
    Column("state", String(16), nullable=False),
    Column("sensor_id", String(NAME), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("event_time", Float, nullable=False),
    Column("detected_at", Float, nullable=False),
    Column("score", Float, nullable=True),
    Column("model_version", String(NAME), nullable=True),
    Column("evidence", JSON, nullable=False),
    Column("arrival_time", Float, nullable=True),
    Column("source_topic", String(NAME), nullable=False),
    # Which life of the topic: a memory-only broker that restarts numbers its offsets from 0 again,
    # and the router then starts a new epoch (consumer_offsets.epoch) instead of colliding with the old ones.
    Column("source_epoch", Integer, nullable=False, default=0),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("recorded_at", Float, nullable=False),
    Column("test", Boolean, nullable=False, default=False),
    UniqueConstraint("alert_id", "state", name="uq_alert_events_alert_id_state"),
    UniqueConstraint("source_topic", "source_epoch", "source_partition", "source_offset",
                     name="uq_alert_events_source"),
    Index("ix_alert_events_sensor_time", "sensor_id", "event_time"),
    Index("ix_alert_events_event_time", "event_time"),
)

# One row per alert_id: where its lifecycle is now (alerting/lifecycle.py says how it moves).
incidents = Table(
    "incidents", metadata,
    Column("alert_id", String(ALERT_ID), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("sensor_id", String(NAME), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("score", Float, nullable=True),
    Column("model_version", String(NAME), nullable=True),
    Column("opened_at", Float, nullable=False),  # wall clock when the store first saw it (escalation counts from it)
    Column("raised_at", Float, nullable=True),  # event time of the raised event
    Column("cleared_at", Float, nullable=True),
    Column("acknowledged_at", Float, nullable=True),
    Column("acknowledged_by", String(NAME), nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("ack_note", Text, nullable=True),
    Column("resolved_at", Float, nullable=True),
    Column("resolved_by", String(NAME), nullable=True),
    Column("resolve_note", Text, nullable=True),
    Column("escalated_at", Float, nullable=True),
    Column("silenced", Boolean, nullable=False, default=False),
    Column("test", Boolean, nullable=False, default=False),
    Column("arrival_time", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
    Index("ix_incidents_state", "state"),
    Index("ix_incidents_sensor_id", "sensor_id"),
    Index("ix_incidents_opened_at", "opened_at"),
)

acknowledgements = Table(
    "acknowledgements", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(ALERT_ID), ForeignKey("incidents.alert_id"), nullable=False),
    Column("by", String(NAME), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("at", Float, nullable=False),
    Index("ix_acknowledgements_alert_id", "alert_id"),
)

# Maintenance windows: an alert matching every given matcher in [starts_at, ends_at) is
# recorded and shown, never delivered.
silences = Table(
    "silences", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sensor_id", String(NAME), nullable=True),
    Column("zone", String(NAME), nullable=True),
    Column("site", String(NAME), nullable=True),
    Column("kind", String(32), nullable=True),
    Column("starts_at", Float, nullable=False),
    Column("ends_at", Float, nullable=False),
    Column("created_by", String(NAME), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Index("ix_silences_ends_at", "ends_at"),
)

# The outbox: one row per (incident state change, channel), written in the state change's
# transaction; the dispatcher sends pending rows and records the outcome here.
deliveries = Table(
    "deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(ALERT_ID), nullable=False),
    Column("state", String(16), nullable=False),
    Column("channel", String(NAME), nullable=False),
    Column("idempotency_key", String(ALERT_ID + 20), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(24), nullable=False),  # pending | sent | failed_permanently
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float, nullable=True),
    Column("latency_s", Float, nullable=True),
    UniqueConstraint("idempotency_key", "channel", name="uq_deliveries_key_channel"),
    Index("ix_deliveries_channel_status", "channel", "status", "id"),
    Index("ix_deliveries_alert_id", "alert_id"),
)

sensors = Table(
    "sensors", metadata,
    Column("sensor_id", String(NAME), primary_key=True),
    Column("site", String(NAME), nullable=False, default=""),
    Column("building", String(NAME), nullable=False, default=""),
    Column("floor", String(NAME), nullable=False, default=""),
    Column("zone", String(NAME), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("updated_at", Float, nullable=False),
)

# Where the router resumes: the next offset to read per partition, written with each event.
consumer_offsets = Table(
    "consumer_offsets", metadata,
    Column("topic", String(NAME), primary_key=True),
    Column("source_partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("epoch", Integer, nullable=False, default=0),
)

# Announced test alarms (smoke test-alarm): a sensor's events in the window are marked test.
test_alarms = Table(
    "test_alarms", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sensor_id", String(NAME), nullable=False),
    Column("starts_at", Float, nullable=False),
    Column("ends_at", Float, nullable=False),
    Column("created_by", String(NAME), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_test_alarms_sensor_id", "sensor_id"),
)
