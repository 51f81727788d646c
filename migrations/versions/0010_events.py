"""Events: what happened, written in the same transaction as the change.

* events: one row per thing that happened to a message, chat or channel
  (db/states.py EventType), pruned after OUTBOX_EVENTS_RETENTION;
* next_event_id(): an event's id is its transaction's id shifted left by
  20 bits plus an ordinal within the transaction. Ids from a sequence
  would commit out of order (a transaction that took id 100 can commit
  after one that took 101, and a reader past 101 would never see 100);
  these ids let a reader hand out only ids below the oldest transaction
  still running, which no later commit can go under (db/event_queries.py);
* a statement trigger that NOTIFYs `outbox_events` after events are
  written: the stream's listener wakes when (and only if) they commit;
* status callbacks: webhook_endpoints (a URL, the event types it wants, an
  encrypted signing secret), webhook_deliveries (one event for one
  endpoint, claimed and retried like an outbox row) and webhook_fanout
  (the last event whose deliveries exist).

Revision ID: 0010
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_TYPES = (
    "message.queued", "message.sent", "message.delivered", "message.read", "message.played",
    "message.failed", "message.cancelled", "message.received", "message.reaction",
    "message.edited", "message.deleted", "chat.read", "chat.archived", "chat.reopened",
    "chat.assigned", "channel.paused", "channel.resumed", "channel.disabled",
)

# The ordinal lives in a transaction-local setting: set_config(..., true)
# goes back to '' at the end of the transaction, so each one counts from 1.
# The xid is the top-level transaction's, also inside a savepoint.
NEXT_EVENT_ID = """
CREATE FUNCTION next_event_id() RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE AS $$
SELECT (CAST(CAST(pg_current_xact_id() AS text) AS bigint) << 20)
       + CAST(set_config('outbox.event_ordinal',
                         CAST(COALESCE(CAST(NULLIF(current_setting('outbox.event_ordinal', true),
                                                   '') AS bigint), 0) + 1 AS text),
                         true) AS bigint)
$$
"""

NOTIFY_EVENTS = """
CREATE FUNCTION notify_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_events', '');
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(NEXT_EVENT_ID)
    op.execute(NOTIFY_EVENTS)
    listed = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("channel_id", sa.UUID(), nullable=True),
        sa.Column("chat_id", sa.UUID(), nullable=True),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.CheckConstraint(f"type IN ({listed})", name=op.f("ck_events_type")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_workspace_id_id"), "events", ["workspace_id", "id"])
    op.execute("CREATE TRIGGER events_notify AFTER INSERT ON events "
               "FOR EACH STATEMENT EXECUTE FUNCTION notify_events()")

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("encrypted_secret", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("after_event_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("status IN ('active', 'disabled')",
                           name=op.f("ck_webhook_endpoints_status")),
        sa.CheckConstraint("cardinality(event_types) > 0",
                           name=op.f("ck_webhook_endpoints_event_types")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(op.f("ix_webhook_endpoints_workspace_id"), "webhook_endpoints",
                    ["workspace_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("endpoint_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.UUID(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivering', 'delivered', 'failed')",
                           name=op.f("ck_webhook_deliveries_status")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"],
                                name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("endpoint_id", "event_id",
                            name=op.f("uq_webhook_deliveries_endpoint_id_event_id")),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["endpoint_id", "next_attempt_at"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_webhook_deliveries_leased", "webhook_deliveries", ["locked_until"],
                    postgresql_where=sa.text("status = 'delivering'"))
    op.create_index(op.f("ix_webhook_deliveries_endpoint_id_id"), "webhook_deliveries",
                    ["endpoint_id", "id"])
    op.create_table(
        "webhook_fanout",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_webhook_fanout_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_fanout")),
    )
    op.execute("INSERT INTO webhook_fanout (id, last_event_id) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("webhook_fanout")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("events")
    op.execute("DROP FUNCTION notify_events()")
    op.execute("DROP FUNCTION next_event_id()")
