-- At most 200 groups per user (accounts/groups.go). X-User-Groups carries
-- the ids of every group of the user on each proxied request: 200 ids
-- make 7,399 bytes, under the 8 KiB that many servers allow for one
-- header line. The user's row is locked first, so that concurrent
-- additions of one user to several groups are counted one after the
-- other and cannot pass the cap together.

CREATE OR REPLACE FUNCTION accounts_group_member_cap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM users WHERE id = NEW.user_id FOR UPDATE;
    IF (SELECT count(*) FROM group_members WHERE user_id = NEW.user_id) >= 200 THEN
        RAISE EXCEPTION 'user % is in 200 groups already', NEW.user_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'group_members_per_user';
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS group_members_cap ON group_members;
CREATE TRIGGER group_members_cap
    BEFORE INSERT ON group_members
    FOR EACH ROW
    EXECUTE FUNCTION accounts_group_member_cap();
