-- The words of a conversation's message are written by triggers instead of a stored generated
-- column. PostgreSQL 15 rebuilds a generated column's expression in every statement that writes
-- the table: it reads the stored expression back, plans it, and inlines message_text by parsing
-- its SQL text again. Every dispatcher statement on `messages` paid for that, although
-- notifications outside conversations have no words: 50 µs per INSERT statement and a few per
-- UPDATE, 8 % of PostgreSQL's CPU at 800 messages/s. A row trigger with a WHEN clause costs an
-- INSERT almost nothing when it does not fire, and an UPDATE that does not name its columns
-- nothing at all. (A BEFORE UPDATE row trigger would lock every updated row first, whatever its
-- columns: hence the AFTER trigger for the rare update that moves a message into a conversation.)

ALTER TABLE communications.messages ALTER COLUMN search DROP EXPRESSION;

CREATE FUNCTION communications.message_words(content jsonb) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('english'::regconfig, communications.message_text(content))
        || to_tsvector('german'::regconfig, communications.message_text(content))
$$;

CREATE FUNCTION communications.words_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := communications.message_words(NEW.content);
    RETURN NEW;
END $$;
CREATE TRIGGER messages_words_on_insert BEFORE INSERT ON communications.messages
    FOR EACH ROW WHEN (NEW.conversation_id IS NOT NULL) EXECUTE FUNCTION communications.words_on_insert();

-- A writer that moves a message into a conversation may set `search` itself (the inbound paths
-- do, saving a second row version); otherwise this writes it.
CREATE FUNCTION communications.words_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communications.messages SET search = communications.message_words(NEW.content) WHERE id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_words_on_update AFTER UPDATE OF content, conversation_id ON communications.messages
    FOR EACH ROW WHEN (NEW.conversation_id IS NOT NULL
                       AND (NEW.search IS NULL OR OLD.content IS DISTINCT FROM NEW.content))
    EXECUTE FUNCTION communications.words_on_update();
