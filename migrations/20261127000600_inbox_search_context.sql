-- Search over conversation messages, and the business context a conversation is about.

-- The words of a message's content, whatever its kind (text, media caption, email subject and
-- text part, interactive reply, location).
CREATE FUNCTION communications.message_text(content jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(content->>'subject', '') || ' ' || coalesce(content->>'body', '') || ' '
        || coalesce(content->>'text', '') || ' ' || coalesce(content->>'caption', '') || ' '
        || coalesce(content->>'title', '') || ' ' || coalesce(content->>'description', '') || ' '
        || coalesce(content->>'name', '') || ' ' || coalesce(content->>'address', '') || ' '
        || coalesce(content->>'filename', '')
$$;

-- Words of a conversation's message in German and English (stemmed by both: an agent searching
-- "Buchungen" finds "Buchung", "booked" finds "booking"); notifications outside conversations
-- are not indexed, so the dispatcher's inserts pay nothing for it.
ALTER TABLE communications.messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    CASE WHEN conversation_id IS NOT NULL THEN
        to_tsvector('english'::regconfig, communications.message_text(content))
        || to_tsvector('german'::regconfig, communications.message_text(content))
    END) STORED;
CREATE INDEX messages_search_idx ON communications.messages USING gin (search) WHERE conversation_id IS NOT NULL;
-- A thread in the order its messages were written (the provider's time for inbound ones).
CREATE INDEX messages_thread_idx ON communications.messages
    (conversation_id, (COALESCE(provider_timestamp, created_at)) DESC, id DESC) WHERE conversation_id IS NOT NULL;

-- At most one business context per conversation: an upstream booking, service leg or invoice,
-- or one of our fulfillment appointments.
ALTER TABLE communications.conversations
    ADD COLUMN booking_id text CHECK (length(booking_id) BETWEEN 1 AND 200),
    ADD COLUMN service_leg_id text CHECK (length(service_leg_id) BETWEEN 1 AND 200),
    ADD COLUMN invoice_id text CHECK (length(invoice_id) BETWEEN 1 AND 200),
    ADD COLUMN appointment_id uuid,
    ADD CONSTRAINT conversations_one_context
        CHECK (num_nonnulls(booking_id, service_leg_id, invoice_id, appointment_id) <= 1);
CREATE INDEX conversations_booking_idx ON communications.conversations (tenant_id, booking_id) WHERE booking_id IS NOT NULL;
CREATE INDEX conversations_service_leg_idx ON communications.conversations (tenant_id, service_leg_id) WHERE service_leg_id IS NOT NULL;
CREATE INDEX conversations_invoice_idx ON communications.conversations (tenant_id, invoice_id) WHERE invoice_id IS NOT NULL;
CREATE INDEX conversations_appointment_idx ON communications.conversations (tenant_id, appointment_id) WHERE appointment_id IS NOT NULL;

-- The newest row of each upstream entity, from the Hasura events we receive anyway: the
-- conversation's sidebar shows it without calling the upstream system.
CREATE TABLE communications.entity_snapshots (
    tenant_id    uuid NOT NULL,
    -- booking, service_leg or invoice
    kind         text NOT NULL,
    entity_id    text NOT NULL,
    -- The Hasura table it came from (schema.name) and the event's operation.
    source       text NOT NULL,
    op           text NOT NULL,
    row          jsonb NOT NULL,
    event_id     text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, kind, entity_id)
);
