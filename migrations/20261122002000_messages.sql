-- Contacts, messages, their audit trail, and idempotency keys for the send API.

CREATE TABLE communications.contacts (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    display_name       text,
    -- Soft link to an upstream person profile (e.g. a Hasura backoffice's PERSON_PROFILE).
    person_profile_id  uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_tenant_idx ON communications.contacts (tenant_id, id);

-- One row per identifier: the primary key de-duplicates identifiers per tenant.
CREATE TABLE communications.contact_identifiers (
    tenant_id   uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('phone', 'email', 'whatsapp')),
    value       text NOT NULL,
    contact_id  uuid NOT NULL REFERENCES communications.contacts (id) ON DELETE CASCADE,
    PRIMARY KEY (tenant_id, kind, value)
);
CREATE INDEX contact_identifiers_contact_idx ON communications.contact_identifiers (contact_id);

CREATE TABLE communications.messages (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL,
    contact_id            uuid,
    conversation_id       uuid,
    direction             text NOT NULL DEFAULT 'outbound' CHECK (direction IN ('outbound', 'inbound')),
    channel               text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'sms')),
    -- The rest of the fallback chain, tried in order after a permanent failure on `channel`:
    -- [{"channel", "recipient", "content"}], each validated when the message was accepted.
    fallback              jsonb NOT NULL DEFAULT '[]',
    recipient             text NOT NULL,
    -- What is sent, provider-agnostic: {"type":"text"|"media"|"email"|"template", ...}.
    content               jsonb NOT NULL,
    status                text NOT NULL CHECK (status IN ('queued', 'pending_review', 'sending', 'sent', 'delivered',
                                                          'read', 'failed', 'superseded', 'canceled', 'unknown')),
    status_reason         text,
    -- Transactional messages never wait behind campaigns.
    lane                  text NOT NULL DEFAULT 'urgent' CHECK (lane IN ('urgent', 'bulk')),
    channel_account_id    uuid,
    provider              text,
    provider_message_id   text,
    attempts              integer NOT NULL DEFAULT 0,
    scheduled_at          timestamptz,
    metadata              jsonb NOT NULL DEFAULT '{}',
    -- Fallback chain links: this message replaced `supersedes`; `superseded_by` replaced it.
    supersedes            uuid,
    superseded_by         uuid,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    sent_at               timestamptz,
    delivered_at          timestamptz,
    read_at               timestamptz,
    failed_at             timestamptz
);
CREATE INDEX messages_tenant_idx ON communications.messages (tenant_id, id);
CREATE INDEX messages_contact_idx ON communications.messages (tenant_id, contact_id, id);
CREATE UNIQUE INDEX messages_provider_message_idx
    ON communications.messages (provider, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX messages_stuck_idx ON communications.messages (created_at) WHERE status = 'queued';

-- The append-only trail of every state change, with the raw provider payload.
CREATE TABLE communications.message_events (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    message_id   uuid NOT NULL REFERENCES communications.messages (id) ON DELETE CASCADE,
    status       text NOT NULL,
    reason       text,
    source       text NOT NULL CHECK (source IN ('api', 'worker', 'provider', 'system')),
    payload      jsonb,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_events_message_idx ON communications.message_events (message_id, id);

-- `Idempotency-Key` of the send API: the first response is kept and replayed. The row is
-- inserted first (a concurrent duplicate waits on the primary key) and completed with the
-- response in the same transaction.
CREATE TABLE communications.idempotency_keys (
    tenant_id        uuid NOT NULL,
    key              text NOT NULL,
    request_hash     bytea NOT NULL,
    response_status  smallint,
    response_body    jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON communications.idempotency_keys (created_at);
