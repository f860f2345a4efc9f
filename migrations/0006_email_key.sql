-- One mailbox, one account: the normalised form of each user's email
-- (IDNA for the domain, NFKC and case folding for the local part), under
-- which it is unique and found at login. The email itself stays as given.
--
-- The key cannot be computed in SQL: the migrator fills it in Go after
-- this file (accounts.backfillEmailKeys), oldest account first. Rows
-- whose key an older row holds, or whose address cannot be normalised,
-- keep NULL and are reported, never merged or deleted; they still log in
-- with their exact address through users_email_lower_key.

ALTER TABLE users ADD COLUMN IF NOT EXISTS email_key text;

CREATE UNIQUE INDEX IF NOT EXISTS users_email_key_key ON users (email_key) WHERE email_key IS NOT NULL;

-- The rows the migrator still has to look at, found without a full scan
-- at every start.
CREATE INDEX IF NOT EXISTS users_email_key_missing ON users (created_at, id) WHERE email_key IS NULL;
