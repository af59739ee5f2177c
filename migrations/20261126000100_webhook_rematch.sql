-- A callback can arrive before the outcome of the send it is about is recorded (its provider id
-- is not known yet). Such an envelope is answered 200 and kept `unmatched` with its parsed events,
-- the tenants it may concern and our correlation id; a background task applies it again with
-- a growing delay until it matches or its time is up (`expired`). Envelopes refused for coming
-- from an SNS topic nobody configured are kept too, without effect (`refused`).

ALTER TABLE communications.webhook_envelopes
    ADD COLUMN events        jsonb,
    ADD COLUMN tenant_scope  uuid[],
    ADD COLUMN correlation_id uuid,
    ADD COLUMN attempts      integer NOT NULL DEFAULT 0,
    ADD COLUMN retry_at      timestamptz;

CREATE INDEX webhook_envelopes_retry_idx
    ON communications.webhook_envelopes (retry_at) WHERE outcome = 'unmatched';

-- Unmatched envelopes stored before kept no events to apply again.
UPDATE communications.webhook_envelopes SET outcome = 'expired' WHERE outcome = 'unmatched';
