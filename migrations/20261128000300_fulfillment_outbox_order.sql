-- The relay takes an appointment's events in order: it asks, per pending event, whether an older
-- one of the same appointment is still pending. This answers that from the index alone.
CREATE INDEX outbox_pending_appointment_idx ON fulfillment.outbox (appointment_id, id) WHERE published_at IS NULL;
