-- Availability, reservations and appointments own this schema; tables arrive with their issues.
CREATE SCHEMA IF NOT EXISTS fulfillment;
