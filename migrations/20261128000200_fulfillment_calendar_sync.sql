-- Calendar sync: a tenant's connected Google calendars (one per resource) and Jobber accounts,
-- their sealed OAuth credentials, the sync work written in each appointment's transaction, the
-- state of each appointment in each connection, and where a job takes place (Jobber needs it).
ALTER TABLE fulfillment.appointments ADD COLUMN location text CHECK (length(location) <= 500);

CREATE TABLE fulfillment.calendar_connections (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    provider           text NOT NULL CHECK (provider IN ('google', 'jobber')),
    -- Google: the resource whose calendar it is (busy times import to it, its appointments go to
    -- it). Jobber: NULL, every resource's appointments.
    resource_id        uuid REFERENCES fulfillment.resources (id) ON DELETE CASCADE,
    display_name       text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    calendar_id        text,
    -- XChaCha20-Poly1305 envelope {kid, nonce, ciphertext} of the OAuth credentials.
    credentials        jsonb NOT NULL,
    status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'unauthorized')),
    status_reason      text,
    sync_token         text,
    sync_requested_at  timestamptz DEFAULT now(),
    last_synced_at     timestamptz,
    last_sync_error    text,
    -- Google push channel: id, token (compared in constant time), Google's resource id, expiry.
    channel_id         text UNIQUE,
    channel_token      text,
    channel_resource   text,
    channel_expires_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((provider = 'google') = (resource_id IS NOT NULL AND calendar_id IS NOT NULL))
);
CREATE INDEX calendar_connections_tenant_idx ON fulfillment.calendar_connections (tenant_id, resource_id);

ALTER TABLE fulfillment.busy_times ADD CONSTRAINT busy_times_connection_fk
    FOREIGN KEY (connection_id) REFERENCES fulfillment.calendar_connections (id) ON DELETE CASCADE;

-- "Make this connection show this appointment as it is now": idempotent, so duplicates are
-- harmless and order does not matter.
CREATE TABLE fulfillment.sync_jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    connection_id    uuid NOT NULL REFERENCES fulfillment.calendar_connections (id) ON DELETE CASCADE,
    appointment_id   uuid NOT NULL REFERENCES fulfillment.appointments (id) ON DELETE CASCADE,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz
);
CREATE INDEX sync_jobs_due_idx ON fulfillment.sync_jobs (next_attempt_at, id) WHERE done_at IS NULL;

CREATE TABLE fulfillment.appointment_sync (
    appointment_id  uuid NOT NULL REFERENCES fulfillment.appointments (id) ON DELETE CASCADE,
    connection_id   uuid NOT NULL REFERENCES fulfillment.calendar_connections (id) ON DELETE CASCADE,
    tenant_id       uuid NOT NULL,
    -- pending: work to do; synced: the vendor shows it; removed: taken off after a cancellation;
    -- failed: the vendor refused it for good (last_error says why).
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'synced', 'removed', 'failed')),
    -- The vendor's ids for it (opaque): Google's event key, Jobber's client/property/job/visit.
    external        jsonb NOT NULL DEFAULT '{}',
    last_error      text,
    attempts        integer NOT NULL DEFAULT 0,
    synced_at       timestamptz,
    remote_change   text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (appointment_id, connection_id)
);
CREATE INDEX appointment_sync_visit_idx ON fulfillment.appointment_sync ((external->>'visit')) WHERE external ? 'visit';
