-- Unread counts and the live stream's ordering.
--
-- Unread: every conversation counts its inbound messages (`inbound_count`, kept by the trigger
-- that keeps its activity times); an agent's read cursor remembers how many of them the agent
-- had read. Unread = inbound_count - read_count: exact, and one subtraction per conversation
-- whatever the length of its history.
--
-- The stream: a change's `id` is allocated when it is written, not when it commits, so ids can
-- commit out of order and a reader that has seen id 11 may later find id 10. Each change also
-- records its transaction id (`xid`); a reader only reads changes of transactions older than
-- every transaction still running (the snapshot's xmin) and orders them by (xid, id). A change
-- that becomes visible later then always sorts after everything already read: (xid, id) is the
-- stream's position, gap-free.

ALTER TABLE communications.conversations ADD COLUMN inbound_count bigint NOT NULL DEFAULT 0;
UPDATE communications.conversations c SET inbound_count =
    (SELECT count(*) FROM communications.messages m WHERE m.conversation_id = c.id AND m.direction = 'inbound');
-- The unread badge counts open conversations only: a small part of a tenant's history.
CREATE INDEX conversations_open_idx ON communications.conversations (tenant_id, assignee_id)
    INCLUDE (inbound_count) WHERE status = 'open';

CREATE OR REPLACE FUNCTION communications.touch_conversation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communications.conversations SET
        last_message_at = GREATEST(last_message_at, COALESCE(NEW.provider_timestamp, NEW.created_at)),
        last_inbound_at = CASE WHEN NEW.direction = 'inbound'
                               THEN GREATEST(last_inbound_at, COALESCE(NEW.provider_timestamp, NEW.created_at))
                               ELSE last_inbound_at END,
        inbound_count = inbound_count + CASE WHEN NEW.direction = 'inbound' THEN 1 ELSE 0 END,
        updated_at = now()
    WHERE id = NEW.conversation_id;
    RETURN NULL;
END $$;

CREATE TABLE communications.read_cursors (
    agent_id         uuid NOT NULL,
    conversation_id  uuid NOT NULL REFERENCES communications.conversations (id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL,
    -- How many of the conversation's inbound messages the agent has read.
    read_count       bigint NOT NULL,
    read_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, conversation_id)
);

ALTER TABLE communications.changes ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
-- Only for one agent's streams (a read cursor moved), else NULL: everyone in the tenant.
ALTER TABLE communications.changes ADD COLUMN agent_id uuid;
CREATE INDEX changes_position_idx ON communications.changes (xid, id);
CREATE INDEX changes_tenant_position_idx ON communications.changes (tenant_id, xid, id);
DROP INDEX communications.changes_tenant_idx;
CREATE INDEX changes_created_idx ON communications.changes (created_at);

-- How far the change log has been trimmed: a stream resuming from before it has missed changes
-- and is told to refetch.
CREATE TABLE communications.change_horizon (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    xid        xid8 NOT NULL,
    id         bigint NOT NULL
);

-- A message of a conversation whose status moves (an agent's reply: sent, delivered, read,
-- failed) is a change for the stream, whichever path moved it.
CREATE FUNCTION communications.message_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO communications.changes (tenant_id, kind, conversation_id, message_id, payload)
    VALUES (NEW.tenant_id, 'message.status_changed', NEW.conversation_id, NEW.id,
            jsonb_build_object('status', NEW.status));
    RETURN NULL;
END $$;
CREATE TRIGGER messages_status_changed AFTER UPDATE OF status ON communications.messages
    FOR EACH ROW WHEN (NEW.conversation_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION communications.message_status_changed();
