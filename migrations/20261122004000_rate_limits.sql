-- Send-rate limits of the dispatch pipeline, shared by every worker process: one row per key
-- (per tenant and channel account), GCRA state. See `communications::rate_limit` for the design.
--
-- UNLOGGED: the state is a few microseconds of bookkeeping per send, rewritten thousands of times
-- a second; writing it to the WAL (and waiting for the flush at each commit) would cost more than
-- the limiter is worth. After a crash or a failover the table is empty, which is the same as
-- every key having been idle: each key may send one burst early, once. Nothing else is lost.
-- fillfactor 50 leaves room on each page so the constant updates stay HOT (no index writes).
CREATE UNLOGGED TABLE communications.rate_limits (
    key      text PRIMARY KEY,
    -- Theoretical arrival time: when the key's granted tokens will have been "paid off" at its
    -- rate. At or before now() the key is idle (a missing row means the same).
    tat      timestamptz NOT NULL,
    -- The decision of the latest acquisition, kept only so that the upsert's RETURNING can report
    -- it (PostgreSQL before 18 cannot return the pre-update row).
    granted  boolean NOT NULL
) WITH (fillfactor = 50);
