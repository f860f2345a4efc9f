-- Security events: who did what to whom, from where. Rows outlive the
-- users they name (no foreign keys), and never hold a secret.

CREATE TABLE IF NOT EXISTS audit_events (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    event      text NOT NULL,
    actor_id   uuid,
    target_id  uuid,
    ip         text,
    user_agent text,
    details    jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS audit_events_at ON audit_events (at DESC, id DESC);
CREATE INDEX IF NOT EXISTS audit_events_event ON audit_events (event, at DESC);
CREATE INDEX IF NOT EXISTS audit_events_actor ON audit_events (actor_id, at DESC);
CREATE INDEX IF NOT EXISTS audit_events_target ON audit_events (target_id, at DESC);
