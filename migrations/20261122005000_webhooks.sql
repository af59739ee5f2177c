-- Provider webhooks: every verified envelope is stored before it is acknowledged, status events
-- are de-duplicated, and bounced or complaining addresses are suppressed per tenant.

CREATE TABLE communications.webhook_envelopes (
    id            uuid PRIMARY KEY,
    -- Known from the URL (Meta, Twilio) or from the message it concerns (SES via SNS).
    tenant_id     uuid,
    provider      text NOT NULL CHECK (provider IN ('meta', 'ses', 'sns', 'twilio')),
    -- status, inbound, voice, subscription, …
    kind          text NOT NULL,
    -- The provider's id for the envelope where it has one (SNS MessageId): a redelivery is a no-op.
    provider_id   text,
    body          text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    -- What became of it: applied, unmatched (no message with that provider id yet), stored (for
    -- the inbox), ignored.
    outcome       text NOT NULL
);
CREATE UNIQUE INDEX webhook_envelopes_provider_id_idx
    ON communications.webhook_envelopes (provider, provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX webhook_envelopes_pending_idx
    ON communications.webhook_envelopes (received_at) WHERE outcome IN ('unmatched', 'stored');

-- A provider event applied to a message is recorded once, however often it is delivered.
ALTER TABLE communications.message_events ADD COLUMN dedupe_key text;
CREATE UNIQUE INDEX message_events_dedupe_idx
    ON communications.message_events (message_id, dedupe_key) WHERE dedupe_key IS NOT NULL;

CREATE TABLE communications.suppressions (
    tenant_id   uuid NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'sms')),
    address     text NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, address)
);
