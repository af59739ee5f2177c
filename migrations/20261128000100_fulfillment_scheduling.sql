-- Scheduling: resources with weekly working hours and exceptions, services, and appointments.
-- Holds (reservations) are appointments in status `held` with an expiry: one exclusion
-- constraint then guards both, so a held slot cannot be booked and two bookings never overlap.
-- A hold past its expiry no longer blocks: every writer that needs its range first marks the
-- expired holds there `expired` (in its own transaction), and readers treat them as free; the
-- constraint cannot say "unexpired" itself, because now() is not immutable.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE fulfillment.resources (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind        text NOT NULL DEFAULT 'technician' CHECK (kind IN ('technician', 'vehicle', 'room', 'other')),
    -- IANA name, checked by the application (chrono-tz) before it gets here.
    time_zone   text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resources_tenant_idx ON fulfillment.resources (tenant_id, id);

-- The usual week, in the resource's local time: ISO weekday 1 (Monday) to 7; minutes after
-- midnight, so a shift can end at 24:00.
CREATE TABLE fulfillment.working_hours (
    resource_id  uuid NOT NULL REFERENCES fulfillment.resources (id) ON DELETE CASCADE,
    weekday      smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    starts       smallint NOT NULL CHECK (starts BETWEEN 0 AND 1439),
    ends         smallint NOT NULL CHECK (ends BETWEEN 1 AND 1440),
    CHECK (ends > starts),
    PRIMARY KEY (resource_id, weekday, starts)
);

-- One local day that differs: closed (all day, or between starts and ends) or extra hours.
CREATE TABLE fulfillment.hours_exceptions (
    id           uuid PRIMARY KEY,
    resource_id  uuid NOT NULL REFERENCES fulfillment.resources (id) ON DELETE CASCADE,
    day          date NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('closed', 'open')),
    starts       smallint CHECK (starts BETWEEN 0 AND 1439),
    ends         smallint CHECK (ends BETWEEN 1 AND 1440),
    note         text CHECK (length(note) <= 500),
    CHECK ((starts IS NULL) = (ends IS NULL)),
    CHECK (ends IS NULL OR ends > starts),
    CHECK (kind = 'closed' OR starts IS NOT NULL)
);
CREATE INDEX hours_exceptions_resource_idx ON fulfillment.hours_exceptions (resource_id, day);

CREATE TABLE fulfillment.services (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL,
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    duration_minutes       integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 1440),
    buffer_before_minutes  integer NOT NULL DEFAULT 0 CHECK (buffer_before_minutes BETWEEN 0 AND 720),
    buffer_after_minutes   integer NOT NULL DEFAULT 0 CHECK (buffer_after_minutes BETWEEN 0 AND 720),
    price_cents            bigint NOT NULL DEFAULT 0 CHECK (price_cents >= 0),
    currency               text NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    active                 boolean NOT NULL DEFAULT true,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX services_tenant_idx ON fulfillment.services (tenant_id, id);

-- Quote rules: a surcharge on the service price for starts on these weekdays within the local
-- time window (percent or a fixed amount).
CREATE TABLE fulfillment.surcharges (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    service_id    uuid REFERENCES fulfillment.services (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    weekdays      smallint[] NOT NULL CHECK (cardinality(weekdays) BETWEEN 1 AND 7 AND weekdays <@ '{1,2,3,4,5,6,7}'),
    starts        smallint NOT NULL CHECK (starts BETWEEN 0 AND 1439),
    ends          smallint NOT NULL CHECK (ends BETWEEN 1 AND 1440),
    percent       integer CHECK (percent BETWEEN 1 AND 1000),
    amount_cents  bigint CHECK (amount_cents > 0),
    CHECK (ends > starts),
    CHECK ((percent IS NULL) <> (amount_cents IS NULL))
);
CREATE INDEX surcharges_tenant_idx ON fulfillment.surcharges (tenant_id, service_id);

CREATE TABLE fulfillment.appointments (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    resource_id      uuid NOT NULL REFERENCES fulfillment.resources (id),
    service_id       uuid NOT NULL REFERENCES fulfillment.services (id),
    -- Soft reference to a communications contact: never joined.
    contact_id       uuid,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    -- What it takes from the resource's time: the appointment with the service's buffers.
    blocks           tstzrange NOT NULL,
    status           text NOT NULL CHECK (status IN ('held', 'booked', 'canceled', 'expired')),
    expires_at       timestamptz,
    source           text NOT NULL CHECK (source IN ('api', 'sms', 'agent')),
    title            text CHECK (length(title) <= 200),
    note             text CHECK (length(note) <= 2000),
    price_cents      bigint NOT NULL DEFAULT 0,
    currency         text NOT NULL DEFAULT 'EUR',
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash     bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    booked_at        timestamptz,
    canceled_at      timestamptz,
    CHECK (ends_at > starts_at),
    CHECK (status <> 'held' OR expires_at IS NOT NULL),
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (tenant_id WITH =, resource_id WITH =, blocks WITH &&)
        WHERE (status IN ('held', 'booked'))
);
CREATE UNIQUE INDEX appointments_idempotency_idx ON fulfillment.appointments (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX appointments_tenant_idx ON fulfillment.appointments (tenant_id, id);
CREATE INDEX appointments_expiring_idx ON fulfillment.appointments (expires_at) WHERE status = 'held';

-- Busy times imported from a resource's connected calendars (their own events, not ours):
-- availability subtracts them.
CREATE TABLE fulfillment.busy_times (
    tenant_id      uuid NOT NULL,
    resource_id    uuid NOT NULL REFERENCES fulfillment.resources (id) ON DELETE CASCADE,
    connection_id  uuid NOT NULL,
    external_id    text NOT NULL,
    during         tstzrange NOT NULL,
    PRIMARY KEY (connection_id, external_id)
);
CREATE INDEX busy_times_during_idx ON fulfillment.busy_times USING gist (resource_id, during);

-- Appointment events for the rest of the system (confirmations, reminders), written in the
-- appointment's transaction and relayed after the commit until the listener took them.
CREATE TABLE fulfillment.outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    event_id        text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN ('booked', 'rescheduled', 'canceled')),
    appointment_id  uuid NOT NULL,
    data            jsonb NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    published_at    timestamptz
);
CREATE INDEX outbox_pending_idx ON fulfillment.outbox (next_attempt_at, id) WHERE published_at IS NULL;
