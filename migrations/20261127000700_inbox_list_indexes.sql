-- Conversation lists at volume (measured by `switchboard bench-inbox`, 100k conversations):
-- lists order by `last_message_at DESC NULLS LAST`, which an index declared plain `DESC` (nulls
-- first) cannot serve, so every list sorted the tenant's whole history; the open-conversation
-- index also serves "mine" and "unassigned" in activity order; read cursors are covered for the
-- per-row unread count and the badge's index-only lookups.
DROP INDEX communications.conversations_activity_idx;
CREATE INDEX conversations_activity_idx
    ON communications.conversations (tenant_id, last_message_at DESC NULLS LAST, id DESC);
DROP INDEX communications.conversations_open_idx;
CREATE INDEX conversations_open_idx
    ON communications.conversations (tenant_id, assignee_id, last_message_at DESC NULLS LAST, id DESC)
    INCLUDE (inbound_count) WHERE status = 'open';
CREATE INDEX read_cursors_agent_idx ON communications.read_cursors (agent_id, conversation_id) INCLUDE (read_count);
