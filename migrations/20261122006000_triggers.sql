-- Trigger rules turn upstream events (domain events, Hasura event triggers) into messages.

CREATE TABLE communications.trigger_rules (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The event name, or the Hasura trigger name.
    event           text NOT NULL,
    -- All must hold: [{"path": "data.new.status", "equals": "DELAYED", "changed": true}, …]
    conditions      jsonb NOT NULL DEFAULT '[]',
    template_name   text NOT NULL,
    -- Paths into the event for the template's locale, e.g. "data.new.locale".
    locale_path     text,
    -- Who receives it: [{"phone": "data.new.phone", "email": "data.new.email"}, …]
    audience        jsonb NOT NULL,
    channels        text[] NOT NULL,
    lane            text NOT NULL DEFAULT 'urgent' CHECK (lane IN ('urgent', 'bulk')),
    require_review  boolean NOT NULL DEFAULT false,
    -- Send relative to a time in the event instead of at once: {"relative_to": path, "offset_secs": -86400}
    schedule        jsonb,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trigger_rules_event_idx ON communications.trigger_rules (tenant_id, event) WHERE enabled;

-- Each upstream event id is processed once per tenant, whatever the delivery retries.
CREATE TABLE communications.processed_events (
    tenant_id    uuid NOT NULL,
    event_id     text NOT NULL,
    event        text NOT NULL,
    message_ids  uuid[] NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
