-- The inbox around conversations: contacts agents can edit and merge, labels on conversations,
-- private notes, canned responses.

-- `external_id` is a free-text soft link to an upstream person (any id format, unlike the uuid
-- `person_profile_id`). A merged contact stays as a pointer (`merged_into`) so old links resolve;
-- everything it owned moved to the survivor, which is never itself merged (no chains).
ALTER TABLE communications.contacts
    ADD COLUMN external_id text CHECK (char_length(external_id) BETWEEN 1 AND 200),
    ADD COLUMN merged_into uuid REFERENCES communications.contacts (id),
    ADD COLUMN merged_at   timestamptz,
    ADD CONSTRAINT contacts_merge_check CHECK ((merged_into IS NULL) = (merged_at IS NULL) AND merged_into <> id);
CREATE INDEX contacts_merged_into_idx ON communications.contacts (merged_into) WHERE merged_into IS NOT NULL;

-- The audit of merges: who merged which contact into which, and what moved.
CREATE TABLE communications.contact_merges (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    merged_id    uuid NOT NULL REFERENCES communications.contacts (id),
    survivor_id  uuid NOT NULL REFERENCES communications.contacts (id),
    -- Exactly one: the agent, or the operator API key.
    agent_id     uuid,
    api_key_id   uuid,
    -- {"identifiers": n, "conversations": [...], "folded": [{"from", "into"}], "messages": n}
    details      jsonb NOT NULL DEFAULT '{}',
    merged_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((agent_id IS NULL) <> (api_key_id IS NULL))
);
CREATE INDEX contact_merges_tenant_idx ON communications.contact_merges (tenant_id, merged_id);

-- A merge that met two unresolved conversations on one channel account (the partial unique index
-- allows one) moved the merged contact's messages into the survivor's and resolved the emptied
-- one, pointing here at where its messages went.
ALTER TABLE communications.conversations
    ADD COLUMN merged_into_conversation uuid REFERENCES communications.conversations (id);

CREATE TABLE communications.labels (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 50),
    color       text CHECK (color ~ '^#[0-9a-f]{6}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX labels_name_idx ON communications.labels (tenant_id, lower(name));

CREATE TABLE communications.conversation_labels (
    conversation_id  uuid NOT NULL REFERENCES communications.conversations (id) ON DELETE CASCADE,
    label_id         uuid NOT NULL REFERENCES communications.labels (id) ON DELETE CASCADE,
    PRIMARY KEY (conversation_id, label_id)
);
CREATE INDEX conversation_labels_label_idx ON communications.conversation_labels (label_id);

-- Private notes live apart from messages, so nothing can ever send one to the contact.
CREATE TABLE communications.conversation_notes (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL REFERENCES communications.conversations (id),
    -- The agent who wrote it; NULL when an operator API key did (then `api_key_id`).
    author_agent_id  uuid,
    api_key_id       uuid,
    text             text NOT NULL CHECK (char_length(text) BETWEEN 1 AND 10000),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((author_agent_id IS NULL) <> (api_key_id IS NULL))
);
CREATE INDEX conversation_notes_conversation_idx ON communications.conversation_notes (conversation_id, id);

CREATE TABLE communications.canned_responses (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    short_code  text NOT NULL CHECK (short_code ~ '^[a-z0-9_-]{1,50}$'),
    text        text NOT NULL CHECK (char_length(text) BETWEEN 1 AND 4000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, short_code)
);
