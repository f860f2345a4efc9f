-- Rate-limit counters of /api/auth/*, shared by every gateway instance
-- (accounts/ratelimit.go). One row per key: "ip:<address>" counts the
-- requests of a client address in a fixed window; "login:<sha256 of the
-- email>" counts the login attempts on one account name and holds its
-- lock. Rows are only ever changed by single INSERT ... ON CONFLICT
-- statements, and deleted once expires_at has passed.

CREATE TABLE IF NOT EXISTS rate_limits (
    key          text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    count        integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    lockouts     integer NOT NULL DEFAULT 0,
    expires_at   timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS rate_limits_expires_at ON rate_limits (expires_at);
