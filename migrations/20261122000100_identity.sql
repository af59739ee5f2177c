-- Tenancy and authentication: tenants, operator API keys, agents and their sessions.
CREATE SCHEMA IF NOT EXISTS identity;

CREATE TABLE identity.tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only a SHA-256 of the key is stored: keys carry >= 128 random bits, so a fast hash is
-- enough and lets the key itself be the lookup. The prefix identifies a key in listings.
CREATE TABLE identity.api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES identity.tenants (id) ON DELETE CASCADE,
    name          text NOT NULL DEFAULT '',
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant_idx ON identity.api_keys (tenant_id, id);

CREATE TABLE identity.agents (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES identity.tenants (id) ON DELETE CASCADE,
    email          text NOT NULL CHECK (email = lower(email)),
    name           text NOT NULL,
    role           text NOT NULL CHECK (role IN ('admin', 'agent')),
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);
CREATE INDEX agents_tenant_idx ON identity.agents (tenant_id, id);

-- Server-side sessions: the cookie carries a random token, the row its SHA-256.
CREATE TABLE identity.sessions (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES identity.tenants (id) ON DELETE CASCADE,
    agent_id      uuid NOT NULL REFERENCES identity.agents (id) ON DELETE CASCADE,
    token_hash    bytea NOT NULL UNIQUE,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX sessions_expiry_idx ON identity.sessions (expires_at);

-- Failed logins, keyed by account (`acct:<slug>:<email>`) and by client address (`ip:<addr>`),
-- so throttling holds across replicas.
CREATE TABLE identity.login_failures (
    key        text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key_idx ON identity.login_failures (key, failed_at);
