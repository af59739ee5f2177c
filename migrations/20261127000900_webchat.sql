-- Webchat: visitors write from the operator's website through our widget, and Switchboard itself
-- delivers the agents' answers (no provider). A visitor is a contact identified by the visitor id
-- in its signed browser token; its messages and conversations carry the channel `webchat`.
ALTER TABLE communications.contact_identifiers DROP CONSTRAINT contact_identifiers_kind_check;
ALTER TABLE communications.contact_identifiers ADD CONSTRAINT contact_identifiers_kind_check
    CHECK (kind IN ('phone', 'email', 'whatsapp', 'webchat'));

ALTER TABLE communications.messages DROP CONSTRAINT messages_channel_check;
ALTER TABLE communications.messages ADD CONSTRAINT messages_channel_check
    CHECK (channel IN ('whatsapp', 'email', 'sms', 'webchat'));

ALTER TABLE communications.conversations DROP CONSTRAINT conversations_channel_check;
ALTER TABLE communications.conversations ADD CONSTRAINT conversations_channel_check
    CHECK (channel IN ('whatsapp', 'email', 'sms', 'webchat'));
