-- Apps, groups and grants (accounts/apps.go, accounts/groups.go).
--
-- An app is a feature service of the platform (documents, ai, ...). A user
-- may use an app when it is open to all, when it is granted to the user
-- directly, or when it is granted to a group the user belongs to; admins
-- may use every app.

CREATE TABLE IF NOT EXISTS apps (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_-]{0,62}$'),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description text,
    open_to_all boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The apps that existed before the registry stay open to every signed-in
-- user, so that nothing is refused until an admin closes one.
INSERT INTO apps (key, name, open_to_all) VALUES
    ('documents', 'Documents', true),
    ('ai', 'AI', true)
ON CONFLICT (key) DO NOTHING;

CREATE TABLE IF NOT EXISTS groups (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Group names are unique without regard to letter case.
CREATE UNIQUE INDEX IF NOT EXISTS groups_name_lower_key ON groups (lower(name));

CREATE TABLE IF NOT EXISTS group_members (
    group_id   uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);

CREATE INDEX IF NOT EXISTS group_members_user_id ON group_members (user_id);

CREATE TABLE IF NOT EXISTS user_app_grants (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    app_key    text NOT NULL REFERENCES apps (key) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, app_key)
);

CREATE INDEX IF NOT EXISTS user_app_grants_app_key ON user_app_grants (app_key);

CREATE TABLE IF NOT EXISTS group_app_grants (
    group_id   uuid NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    app_key    text NOT NULL REFERENCES apps (key) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, app_key)
);

CREATE INDEX IF NOT EXISTS group_app_grants_app_key ON group_app_grants (app_key);

-- Every change that alters what a user may use, or the user's groups, is
-- announced on the user channel of migration 0002, so that each gateway
-- instance drops what it cached about the users concerned. A membership
-- or a direct grant names its user; a group's grant names each member;
-- a change to an app or a group may concern anyone and is announced with
-- an empty payload, which drops every cached user (accounts/notify.go).

CREATE OR REPLACE FUNCTION accounts_notify_row_user_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('accounts_user_changed', OLD.user_id::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('accounts_user_changed', NEW.user_id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION accounts_notify_group_members_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('accounts_user_changed', m.user_id::text)
            FROM group_members m WHERE m.group_id = OLD.group_id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('accounts_user_changed', m.user_id::text)
            FROM group_members m WHERE m.group_id = NEW.group_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION accounts_notify_everyone_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('accounts_user_changed', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS group_members_notify_changed ON group_members;
CREATE TRIGGER group_members_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON group_members
    FOR EACH ROW EXECUTE FUNCTION accounts_notify_row_user_changed();

DROP TRIGGER IF EXISTS user_app_grants_notify_changed ON user_app_grants;
CREATE TRIGGER user_app_grants_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON user_app_grants
    FOR EACH ROW EXECUTE FUNCTION accounts_notify_row_user_changed();

DROP TRIGGER IF EXISTS group_app_grants_notify_changed ON group_app_grants;
CREATE TRIGGER group_app_grants_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON group_app_grants
    FOR EACH ROW EXECUTE FUNCTION accounts_notify_group_members_changed();

DROP TRIGGER IF EXISTS groups_notify_changed ON groups;
CREATE TRIGGER groups_notify_changed
    AFTER UPDATE OR DELETE ON groups
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_notify_everyone_changed();

DROP TRIGGER IF EXISTS apps_notify_changed ON apps;
CREATE TRIGGER apps_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON apps
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_notify_everyone_changed();
