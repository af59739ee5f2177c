-- Crash safety of dispatch. A claimed message (`sending`) names the process that claimed it
-- (`claimed_by`, a row of `dispatch_leases` that the process keeps fresh) and says whether its
-- provider request has started (`requested_at`, written just before the request). When the
-- process dies, a message it claimed but never requested goes back to the queue, and one whose
-- request had started becomes `unknown` and is settled with the provider (see
-- `communications::dispatch::recovery` and `settle`).

CREATE TABLE communications.dispatch_leases (
    owner         uuid PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE communications.messages
    ADD COLUMN claimed_by     uuid,
    ADD COLUMN requested_at   timestamptz,
    -- When the provider was last asked about this message's status (Twilio catch-up after an outage).
    ADD COLUMN checked_at     timestamptz;

-- Only messages whose outcome is open are in it: what recovery and settlement look at.
CREATE INDEX messages_open_outcome_idx
    ON communications.messages (updated_at) WHERE status IN ('sending', 'unknown');

-- Twilio messages that were sent but never heard of again: their status is asked for.
CREATE INDEX messages_unconfirmed_twilio_idx
    ON communications.messages (sent_at) WHERE status = 'sent' AND provider = 'twilio' AND checked_at IS NULL;
