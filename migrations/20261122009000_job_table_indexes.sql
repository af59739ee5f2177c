-- Indexes of the job table for its life as a busy queue.
--
-- apalis acknowledges finished jobs with a statement that joins them on `lock_by`. A worker's
-- name stays on every job it ever ran, and every acknowledgement leaves another index entry
-- behind, so with the plain `lock_by` indexes (there were two, identical) the planner walked
-- all of a worker's past jobs to find the handful it was finishing: 3-6 ms per acknowledgement
-- after a few thousand jobs, growing without bound. Recovering a dead worker's jobs only ever
-- looks at jobs in flight, so a partial index of those serves it, and stays as small as the
-- number of jobs running; the acknowledgement then finds its jobs by primary key.
DROP INDEX IF EXISTS apalis.lidx;
DROP INDEX IF EXISTS apalis.idx_apalis_jobs_lock_by;
CREATE INDEX IF NOT EXISTS jobs_in_flight_lock_by_idx ON apalis.jobs (lock_by)
    WHERE status = 'Queued' OR status = 'Running';
-- The same as the primary key: one index fewer to maintain on every insert and update.
DROP INDEX IF EXISTS apalis.unique_job_id;
