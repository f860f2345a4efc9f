-- Email verification and password reset (accounts/emailtokens.go,
-- accounts/outbox.go).
--
-- users.email_verified: accounts that exist when this migration runs
-- count as verified (they were active before verification existed); new
-- ones start unverified.
ALTER TABLE users ADD COLUMN IF NOT EXISTS email_verified boolean NOT NULL DEFAULT true;
ALTER TABLE users ALTER COLUMN email_verified SET DEFAULT false;

-- One-time tokens of the links in mails. Only a hash of each token is
-- stored (the token itself is in the mail alone); email is the address
-- it was sent to: a token stops working when the user's address changes.
-- A user has at most one token per purpose (issuing one deletes the
-- others); used tokens stay until they expire, for the record.
CREATE TABLE IF NOT EXISTS email_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'password_reset')),
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX IF NOT EXISTS email_tokens_user ON email_tokens (user_id, purpose);

-- The outbox: a request that sends mail only inserts a row here; a
-- sender on every instance claims due rows (FOR UPDATE SKIP LOCKED, then
-- a lease in claimed_until), sends them, and marks them sent, or retries
-- with backoff, or gives up and records why. A row names its recipient
-- by user (user_id), or by the address a client typed (address: a
-- resend or reset request, resolved by the sender, so that the request
-- does the same work whether or not the address has an account). nonce
-- makes the token of a link mail (an HMAC of it under a key that is not
-- in the database), so that a retry sends the same link.
CREATE TABLE IF NOT EXISTS mail_outbox (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('verify_email', 'password_reset', 'password_changed')),
    user_id         uuid REFERENCES users (id) ON DELETE CASCADE,
    address         text,
    nonce           bytea,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed', 'dropped')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    -- A waiting row names its recipient; a done one keeps no typed
    -- address (the sender records the account it resolved, if any).
    CHECK (state <> 'pending' OR user_id IS NOT NULL OR address IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS mail_outbox_due ON mail_outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS mail_outbox_done ON mail_outbox (done_at) WHERE state <> 'pending';
