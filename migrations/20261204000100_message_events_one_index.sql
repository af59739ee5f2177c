-- The trail had two indexes, its primary key (id) and (message_id, id), and every event wrote
-- both: two per message on the send path alone (accepted, sent), each a B-tree descent and a WAL
-- record. Events are only ever read by their message, in order, which the second serves; an id is
-- a UUIDv7 made by the writer and never looked up alone. The primary key becomes
-- (message_id, id), still unique, and the table keeps one index besides the rare dedupe one.
CREATE UNIQUE INDEX message_events_message_id_id_key ON communications.message_events (message_id, id);
ALTER TABLE communications.message_events
    DROP CONSTRAINT message_events_pkey,
    ADD CONSTRAINT message_events_pkey PRIMARY KEY USING INDEX message_events_message_id_id_key;
DROP INDEX communications.message_events_message_idx;
