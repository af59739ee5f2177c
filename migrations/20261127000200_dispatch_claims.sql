-- Each claim of a message gets its own token: only the dispatch that made the claim can mark the
-- message in flight. A claim whose outcome its process never learned (the connection broke while
-- the claim committed), or a stale duplicate of a job in the same process, then cannot send; the
-- message goes back to the queue through recovery instead.
ALTER TABLE communications.messages ADD COLUMN claim uuid;
