-- Cron triggers: a named event with a fixed payload, emitted on a cron schedule (as Hasura's cron
-- triggers do); trigger rules on that event name turn it into messages.

CREATE TABLE communications.cron_triggers (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    -- The event name it emits.
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Five fields, UTC: minute hour day-of-month month day-of-week.
    schedule     text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    enabled      boolean NOT NULL DEFAULT true,
    -- The next scheduled time; advanced in the transaction that emits the event.
    next_run_at  timestamptz NOT NULL,
    last_run_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX cron_triggers_due_idx ON communications.cron_triggers (next_run_at) WHERE enabled;
