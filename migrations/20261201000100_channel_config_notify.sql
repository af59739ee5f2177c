-- The dispatcher keeps channel accounts and their providers between batches in every process
-- (crates/communications/src/dispatch/configs.rs). Any change to them, by whatever writer,
-- notifies `switchboard_channel_config`; PostgreSQL delivers the notification when the change
-- commits, and each process drops what it kept. Statement-level: one notification per statement,
-- and these tables change a few times a day, never per message.
CREATE FUNCTION communications.announce_channel_config() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_channel_config', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER channel_accounts_announce
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON communications.channel_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION communications.announce_channel_config();

CREATE TRIGGER provider_configs_announce
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON communications.provider_configs
    FOR EACH STATEMENT EXECUTE FUNCTION communications.announce_channel_config();
