-- The inbox and notification pipeline own this schema; their tables arrive with their issues.
CREATE SCHEMA IF NOT EXISTS communications;
