-- A vendor that asked us to wait (throttling) holds all of that connection's sync work back
-- until then: one row says so, instead of every pending job being pushed back.
ALTER TABLE fulfillment.calendar_connections ADD COLUMN hold_until timestamptz;
