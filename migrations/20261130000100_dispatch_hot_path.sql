-- The dispatch hot path touches fewer indexes and locks per message.
--
-- The in-flight mark (just before a provider request) wrote `provider`, a column indexed (and in
-- a partial index's predicate), so every mark was a non-HOT update: a new entry in each of the
-- table's indexes, and their WAL. The mark now writes `requested_via`, which no index names, and
-- the table keeps room on its pages for the new row version, so the mark stays on its page and
-- touches no index. `provider` is filled in from it when the message settles (sent, failed,
-- unknown).
ALTER TABLE communications.messages ADD COLUMN requested_via text;
ALTER TABLE communications.messages SET (fillfactor = 85);

-- The trail's foreign key locked its message row (FOR KEY SHARE: a WAL record and a row lock) for
-- every event, twice per message on the send path alone. Events are only ever written by the
-- statement or transaction that writes their message or moves it on, and messages are never
-- deleted, so the check guarded nothing the code does not.
ALTER TABLE communications.message_events DROP CONSTRAINT message_events_message_id_fkey;
