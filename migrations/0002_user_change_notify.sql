-- Every change to a user row is announced on the channel
-- accounts_user_changed with the user's id, so that each gateway instance
-- drops what it cached about that user at once (deactivation, demotion,
-- deletion and revocation take effect on the next request everywhere).

CREATE OR REPLACE FUNCTION accounts_notify_user_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('accounts_user_changed', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS users_notify_changed ON users;
CREATE TRIGGER users_notify_changed
    AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION accounts_notify_user_changed();
