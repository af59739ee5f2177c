-- Notification templates: a named template per tenant with one variant per channel and locale.
-- Variant bodies are minijinja templates checked for syntax before they are stored.

CREATE TABLE communications.templates (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    -- What the send API names (`content.template.name`): a lowercase slug, unique per tenant.
    name            text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'),
    description     text,
    -- The domain event that triggers it (e.g. `booking.confirmed`), for trigger rules.
    trigger_event   text,
    -- The last resort of locale resolution: exact locale, its language, then this.
    default_locale  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT templates_tenant_name_key UNIQUE (tenant_id, name)
);
CREATE INDEX templates_tenant_idx ON communications.templates (tenant_id, id);
CREATE INDEX templates_trigger_idx ON communications.templates (tenant_id, trigger_event)
    WHERE trigger_event IS NOT NULL;

CREATE TABLE communications.template_variants (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    template_id  uuid NOT NULL REFERENCES communications.templates (id) ON DELETE CASCADE,
    channel      text NOT NULL CHECK (channel IN ('whatsapp', 'email', 'sms')),
    locale       text NOT NULL,
    -- sms {"text"}; email {"subject","html"?,"text"?}; whatsapp {"text"} or {"meta_template":{…}}.
    body         jsonb NOT NULL CHECK (jsonb_typeof(body) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT template_variants_channel_locale_key UNIQUE (template_id, channel, locale)
);
CREATE INDEX template_variants_tenant_idx ON communications.template_variants (tenant_id, template_id);
