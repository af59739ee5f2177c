-- The inbox: inbound messages belong to conversations (one contact on one channel account) that
-- agents work. A contact has at most one conversation that is not resolved per channel account;
-- a new inbound message goes there, else starts a new conversation. Every change agents must see
-- is appended to `changes`, whose ids order the live stream.

CREATE TABLE communications.conversations (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    contact_id          uuid NOT NULL REFERENCES communications.contacts (id),
    channel             text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'sms')),
    channel_account_id  uuid REFERENCES communications.channel_accounts (id),
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'snoozed', 'resolved')),
    assignee_id         uuid,
    snoozed_until       timestamptz,
    -- Kept by the database (trigger below) from the messages' times (the provider's, for inbound):
    -- newest activity first. NULL only inside the transaction that creates the conversation.
    last_message_at     timestamptz,
    last_inbound_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX conversations_unresolved_idx
    ON communications.conversations (tenant_id, contact_id, channel, channel_account_id) NULLS NOT DISTINCT
    WHERE status <> 'resolved';
CREATE INDEX conversations_activity_idx ON communications.conversations (tenant_id, last_message_at DESC, id DESC);

ALTER TABLE communications.messages DROP CONSTRAINT messages_status_check;
ALTER TABLE communications.messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('queued', 'pending_review', 'sending', 'sent', 'delivered', 'read', 'failed', 'superseded',
                      'canceled', 'unknown', 'received'));
-- When the provider says the message was written (inbound): a thread is ordered by it.
ALTER TABLE communications.messages ADD COLUMN provider_timestamp timestamptz;
CREATE INDEX messages_conversation_idx ON communications.messages (conversation_id, id) WHERE conversation_id IS NOT NULL;

CREATE FUNCTION communications.touch_conversation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communications.conversations SET
        last_message_at = GREATEST(last_message_at, COALESCE(NEW.provider_timestamp, NEW.created_at)),
        last_inbound_at = CASE WHEN NEW.direction = 'inbound'
                               THEN GREATEST(last_inbound_at, COALESCE(NEW.provider_timestamp, NEW.created_at))
                               ELSE last_inbound_at END,
        updated_at = now()
    WHERE id = NEW.conversation_id;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_touch_conversation AFTER INSERT ON communications.messages
    FOR EACH ROW WHEN (NEW.conversation_id IS NOT NULL) EXECUTE FUNCTION communications.touch_conversation();
CREATE TRIGGER messages_join_conversation AFTER UPDATE OF conversation_id ON communications.messages
    FOR EACH ROW WHEN (NEW.conversation_id IS NOT NULL AND OLD.conversation_id IS DISTINCT FROM NEW.conversation_id)
    EXECUTE FUNCTION communications.touch_conversation();

-- The durable change log behind the live stream: ids are the stream's event ids.
CREATE TABLE communications.changes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    kind             text NOT NULL,
    conversation_id  uuid,
    message_id       uuid,
    payload          jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_tenant_idx ON communications.changes (tenant_id, id);
