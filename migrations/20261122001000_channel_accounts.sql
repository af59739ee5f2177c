-- Channel accounts (one per channel type per tenant, revoked ones aside) and the provider
-- configurations behind them. tenant_id is a soft reference: modules never join across schemas.
CREATE TABLE communications.channel_accounts (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    channel_type   text NOT NULL CHECK (channel_type IN ('whatsapp', 'email', 'sms', 'webchat')),
    display_name   text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    status         text NOT NULL DEFAULT 'pending_verification'
                   CHECK (status IN ('pending_verification', 'active', 'suspended', 'revoked')),
    status_reason  text,
    -- The operator's sender identity once known: E.164 number, email domain, WhatsApp number.
    sender         text,
    -- What verification needs or learned: DKIM records, quality rating, messaging tier.
    verification   jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX channel_accounts_one_per_type
    ON communications.channel_accounts (tenant_id, channel_type) WHERE status <> 'revoked';
CREATE INDEX channel_accounts_tenant_idx ON communications.channel_accounts (tenant_id, id);

-- Several providers per account, tried by priority (0 = primary) for failover. Rows without a
-- tenant are platform defaults, serving tenants that bring no provider of their own.
CREATE TABLE communications.provider_configs (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid,
    channel_account_id  uuid REFERENCES communications.channel_accounts (id) ON DELETE CASCADE,
    channel_type        text NOT NULL CHECK (channel_type IN ('whatsapp', 'email', 'sms')),
    provider            text NOT NULL CHECK (provider IN ('meta', 'ses', 'sns', 'twilio')),
    priority            integer NOT NULL CHECK (priority BETWEEN 0 AND 99),
    enabled             boolean NOT NULL DEFAULT true,
    -- Non-secret fields, as given.
    settings            jsonb NOT NULL DEFAULT '{}',
    -- Secret fields: field name -> XChaCha20-Poly1305 envelope {kid, nonce, ciphertext}.
    secrets             jsonb NOT NULL DEFAULT '{}',
    -- Secret fields: field name -> display mask such as "…a1b2".
    masks               jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((tenant_id IS NULL) = (channel_account_id IS NULL))
);
CREATE UNIQUE INDEX provider_configs_account_priority
    ON communications.provider_configs (channel_account_id, priority) WHERE channel_account_id IS NOT NULL;
CREATE UNIQUE INDEX provider_configs_platform_priority
    ON communications.provider_configs (channel_type, priority) WHERE tenant_id IS NULL;
CREATE INDEX provider_configs_tenant_idx ON communications.provider_configs (tenant_id, channel_account_id);
