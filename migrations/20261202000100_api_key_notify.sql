-- Every process keeps the API keys it has authenticated (crates/identity/src/lib.rs), so a request
-- does not read `identity.api_keys` each time. A change that can end a key's validity — revoked,
-- its digest or tenant rewritten, deleted (also through a tenant's deletion) — notifies
-- `switchboard_api_keys`; PostgreSQL delivers the notification when the change commits, and each
-- process forgets every key it kept. A new key needs none (keys not found are never kept), nor
-- does the `last_used_at` refresh. Statement-level: one notification per statement.
CREATE FUNCTION identity.announce_api_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_api_keys', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_announce_update
    AFTER UPDATE OF revoked_at, key_hash, tenant_id ON identity.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION identity.announce_api_keys();

CREATE TRIGGER api_keys_announce_delete
    AFTER DELETE OR TRUNCATE ON identity.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION identity.announce_api_keys();
