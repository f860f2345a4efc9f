-- Refresh sessions (accounts/sessions.go).
--
-- A session is one sign-in (one login) of one user on one device. It holds
-- a family of refresh tokens: each refresh retires the token presented
-- and adds its successor. Only SHA-256 hashes of refresh tokens are
-- stored. A retired token presented again after the reuse grace window
-- revokes its whole session (the token was copied).

-- Access tokens whose iat is before this instant are refused (logout-all).
-- Stored rounded up to the next whole second, since iat has one-second
-- resolution.
ALTER TABLE users ADD COLUMN IF NOT EXISTS tokens_valid_after timestamptz;

CREATE TABLE IF NOT EXISTS sessions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Last login or refresh (not every request: that would be a write per
    -- request).
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    -- User-Agent and client address of the last login or refresh.
    user_agent     text NOT NULL DEFAULT '',
    ip             text NOT NULL DEFAULT '',
    revoked_at     timestamptz,
    -- logout, logout_all, revoked, password_change, reuse
    revoked_reason text
);

CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id, last_used_at DESC);

CREATE TABLE IF NOT EXISTS refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- The token this one was exchanged for (null for the login's token).
    parent_hash bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Null while the token may be exchanged; set when it was.
    retired_at  timestamptz
);

CREATE INDEX IF NOT EXISTS refresh_tokens_session_id ON refresh_tokens (session_id);

-- Revoking a session is announced on the user channel of migration 0002
-- with the session's user id: every gateway instance drops its cached
-- state of that user, which includes the user's recently revoked
-- sessions, so the session's access tokens stop working on the next
-- request everywhere.
CREATE OR REPLACE FUNCTION accounts_notify_session_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('accounts_user_changed', NEW.user_id::text);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS sessions_notify_revoked ON sessions;
CREATE TRIGGER sessions_notify_revoked
    AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION accounts_notify_session_revoked();
