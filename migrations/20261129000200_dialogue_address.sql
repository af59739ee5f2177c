-- The dialogue asks for the visit's address once a slot is booked (home services need one, and
-- Jobber refuses a visit without it).
ALTER TABLE communications.dialogues DROP CONSTRAINT dialogues_state_check;
ALTER TABLE communications.dialogues ADD CONSTRAINT dialogues_state_check
    CHECK (state IN ('proposing', 'confirming', 'address', 'booked', 'handed_off', 'agent', 'stopped'));
