ALTER TABLE group_members DROP CONSTRAINT group_members_tenant_id_user_id_fkey;
ALTER TABLE group_members ADD CONSTRAINT group_members_tenant_id_user_id_fkey
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE held_changes DROP COLUMN user_version;
ALTER TABLE tenants DROP CONSTRAINT brake_window_at_most_a_week;
DROP TABLE deprovisions;
