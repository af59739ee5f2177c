-- Who takes part in a conversation, with a role and attributes (a seeker and a building
-- contact are handled differently): the conversation's contact is its first participant
-- (`customer`); someone else whose mail joins the thread becomes another (`participant`).
CREATE TABLE communications.conversation_participants (
    conversation_id  uuid NOT NULL REFERENCES communications.conversations (id) ON DELETE CASCADE,
    contact_id       uuid NOT NULL REFERENCES communications.contacts (id),
    tenant_id        uuid NOT NULL,
    role             text NOT NULL DEFAULT 'participant' CHECK (role ~ '^[a-z][a-z0-9_]{0,49}$'),
    attributes       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    joined_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, contact_id)
);
CREATE INDEX conversation_participants_contact_idx ON communications.conversation_participants (contact_id);
INSERT INTO communications.conversation_participants (conversation_id, contact_id, tenant_id, role)
SELECT id, contact_id, tenant_id, 'customer' FROM communications.conversations;
