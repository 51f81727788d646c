"""What the HTTP API reads before it admits work (outbox/api/limits.py)."""

# A workspace's queued rows, through its channels: each channel's part is an
# index-only count on ix_outbox_due (partial: queued rows only).
WORKSPACE_QUEUED = """
SELECT count(*)
FROM outbox.outbox_messages o
WHERE o.status = 'queued'
  AND o.channel_id IN (SELECT c.id FROM outbox.channels c WHERE c.workspace_id = :workspace_id)
"""
