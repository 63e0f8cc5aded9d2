"""the alert store: events, incidents, acknowledgements, silences, deliveries, sensors, offsets, test alarms

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-02 18:36:17.248496
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('sensor_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('event_time', sa.Float(), nullable=False),
    sa.Column('detected_at', sa.Float(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('model_version', sa.String(length=200), nullable=True),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('arrival_time', sa.Float(), nullable=True),
    sa.Column('source_topic', sa.String(length=200), nullable=False),
    sa.Column('source_epoch', sa.Integer(), nullable=False),
    sa.Column('source_partition', sa.Integer(), nullable=False),
    sa.Column('source_offset', sa.BigInteger(), nullable=False),
    sa.Column('recorded_at', sa.Float(), nullable=False),
    sa.Column('test', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_events')),
    sa.UniqueConstraint('alert_id', 'state', name='uq_alert_events_alert_id_state'),
    sa.UniqueConstraint('source_topic', 'source_epoch', 'source_partition', 'source_offset',
                        name='uq_alert_events_source')
    )
    with op.batch_alter_table('alert_events', schema=None) as batch_op:
        batch_op.create_index('ix_alert_events_event_time', ['event_time'], unique=False)
        batch_op.create_index('ix_alert_events_sensor_time', ['sensor_id', 'event_time'], unique=False)

    op.create_table('consumer_offsets',
    sa.Column('topic', sa.String(length=200), nullable=False),
    sa.Column('source_partition', sa.Integer(), nullable=False),
    sa.Column('next_offset', sa.BigInteger(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('topic', 'source_partition', name=op.f('pk_consumer_offsets'))
    )
    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=200), nullable=False),
    sa.Column('idempotency_key', sa.String(length=84), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.Float(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('sent_at', sa.Float(), nullable=True),
    sa.Column('latency_s', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('idempotency_key', 'channel', name='uq_deliveries_key_channel')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_alert_id', ['alert_id'], unique=False)
        batch_op.create_index('ix_deliveries_channel_status', ['channel', 'status', 'id'], unique=False)

    op.create_table('incidents',
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('sensor_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('model_version', sa.String(length=200), nullable=True),
    sa.Column('opened_at', sa.Float(), nullable=False),
    sa.Column('raised_at', sa.Float(), nullable=True),
    sa.Column('cleared_at', sa.Float(), nullable=True),
    sa.Column('acknowledged_at', sa.Float(), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=200), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('ack_note', sa.Text(), nullable=True),
    sa.Column('resolved_at', sa.Float(), nullable=True),
    sa.Column('resolved_by', sa.String(length=200), nullable=True),
    sa.Column('resolve_note', sa.Text(), nullable=True),
    sa.Column('escalated_at', sa.Float(), nullable=True),
    sa.Column('silenced', sa.Boolean(), nullable=False),
    sa.Column('test', sa.Boolean(), nullable=False),
    sa.Column('arrival_time', sa.Float(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('alert_id', name=op.f('pk_incidents'))
    )
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.create_index('ix_incidents_opened_at', ['opened_at'], unique=False)
        batch_op.create_index('ix_incidents_sensor_id', ['sensor_id'], unique=False)
        batch_op.create_index('ix_incidents_state', ['state'], unique=False)

    op.create_table('sensors',
    sa.Column('sensor_id', sa.String(length=200), nullable=False),
    sa.Column('site', sa.String(length=200), nullable=False),
    sa.Column('building', sa.String(length=200), nullable=False),
    sa.Column('floor', sa.String(length=200), nullable=False),
    sa.Column('zone', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('sensor_id', name=op.f('pk_sensors'))
    )
    op.create_table('silences',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sensor_id', sa.String(length=200), nullable=True),
    sa.Column('zone', sa.String(length=200), nullable=True),
    sa.Column('site', sa.String(length=200), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=True),
    sa.Column('starts_at', sa.Float(), nullable=False),
    sa.Column('ends_at', sa.Float(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_silences'))
    )
    with op.batch_alter_table('silences', schema=None) as batch_op:
        batch_op.create_index('ix_silences_ends_at', ['ends_at'], unique=False)

    op.create_table('test_alarms',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('sensor_id', sa.String(length=200), nullable=False),
    sa.Column('starts_at', sa.Float(), nullable=False),
    sa.Column('ends_at', sa.Float(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_test_alarms'))
    )
    with op.batch_alter_table('test_alarms', schema=None) as batch_op:
        batch_op.create_index('ix_test_alarms_sensor_id', ['sensor_id'], unique=False)

    op.create_table('acknowledgements',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('by', sa.String(length=200), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['incidents.alert_id'], name=op.f('fk_acknowledgements_alert_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_acknowledgements'))
    )
    with op.batch_alter_table('acknowledgements', schema=None) as batch_op:
        batch_op.create_index('ix_acknowledgements_alert_id', ['alert_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('acknowledgements', schema=None) as batch_op:
        batch_op.drop_index('ix_acknowledgements_alert_id')

    op.drop_table('acknowledgements')
    with op.batch_alter_table('test_alarms', schema=None) as batch_op:
        batch_op.drop_index('ix_test_alarms_sensor_id')

    op.drop_table('test_alarms')
    with op.batch_alter_table('silences', schema=None) as batch_op:
        batch_op.drop_index('ix_silences_ends_at')

    op.drop_table('silences')
    op.drop_table('sensors')
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_state')
        batch_op.drop_index('ix_incidents_sensor_id')
        batch_op.drop_index('ix_incidents_opened_at')

    op.drop_table('incidents')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_channel_status')
        batch_op.drop_index('ix_deliveries_alert_id')

    op.drop_table('deliveries')
    op.drop_table('consumer_offsets')
    with op.batch_alter_table('alert_events', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_events_sensor_time')
        batch_op.drop_index('ix_alert_events_event_time')

    op.drop_table('alert_events')
