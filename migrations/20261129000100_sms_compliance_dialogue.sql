-- Missed calls answered by SMS, the SMS booking dialogue, and compliance (opt-out, consent,
-- quiet hours) as the domain's rules rather than the adapters'.

-- One messaging policy per tenant. Absent row: the defaults (see `policy/model.rs`).
CREATE TABLE communications.messaging_policies (
    tenant_id               uuid PRIMARY KEY,
    -- IANA zone for quiet hours when the contact has none.
    time_zone               text NOT NULL DEFAULT 'UTC',
    -- Local times; NULL start: no quiet hours. A window may wrap midnight (21:00–08:00).
    quiet_start             time DEFAULT '21:00',
    quiet_end               time DEFAULT '08:00',
    -- Whether transactional (urgent-lane) messages wait for the morning too.
    quiet_transactional     boolean NOT NULL DEFAULT false,
    help_text               text,
    -- {enabled, forward_to, dial_timeout_secs, short_call_secs, template, text, say}
    missed_call             jsonb NOT NULL DEFAULT '{}',
    -- {enabled, service_id, slots, confirm, lead_minutes, handoff_text}
    booking                 jsonb NOT NULL DEFAULT '{}',
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Quiet hours in the contact's own zone when we know it.
ALTER TABLE communications.contacts ADD COLUMN time_zone text;

-- Every consent change, whoever made it: the audit trail of opt-outs and opt-ins.
CREATE TABLE communications.consent_events (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'sms')),
    address     text NOT NULL,
    -- opt_out, opt_in
    action      text NOT NULL CHECK (action IN ('opt_out', 'opt_in')),
    -- keyword (the contact wrote STOP/START…), provider (e.g. Twilio 21610), api (an operator or agent)
    source      text NOT NULL CHECK (source IN ('keyword', 'provider', 'api')),
    -- The keyword, the provider's code, or the actor.
    detail      text NOT NULL,
    -- The inbound message or failed send that caused it.
    message_id  uuid,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_events_address_idx ON communications.consent_events (tenant_id, channel, address, occurred_at DESC);

-- The SMS booking dialogue of a conversation: a persisted state machine.
CREATE TABLE communications.dialogues (
    conversation_id  uuid PRIMARY KEY REFERENCES communications.conversations (id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL,
    contact_id       uuid NOT NULL,
    -- proposing: slots offered, waiting for a number; confirming: a slot held, waiting for YES;
    -- booked; handed_off: a human takes it from here; agent: an agent took over; stopped: opted out.
    state            text NOT NULL CHECK (state IN ('proposing', 'confirming', 'booked', 'handed_off', 'agent', 'stopped')),
    service_id       uuid,
    -- [{n, resource_id, service_id, start, end, local_start, time_zone}]
    proposals        jsonb NOT NULL DEFAULT '[]',
    -- The held slot while confirming: {id, n, expires_at}
    hold             jsonb,
    appointment_id   uuid,
    -- The call that started it (Twilio CallSid).
    started_by       text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Inbound texts waiting for their dialogue, written in the webhook's transaction (an outbox):
-- the dialogue asks fulfillment outside it. The id is the inbound message's, so a redelivered
-- webhook (a duplicate message) never makes a second turn.
CREATE TABLE communications.dialogue_turns (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    body             text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_at          timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dialogue_turns_due_idx ON communications.dialogue_turns (next_at);
