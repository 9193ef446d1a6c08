-- The brake counts deprovisions from a ledger: deactivations and deletions of active users both
-- count, and a deleted user's deactivation keeps counting (counting archived users missed both).
CREATE TABLE deprovisions (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    user_id   uuid NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deprovisions_window ON deprovisions (tenant_id, at);
ALTER TABLE deprovisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE deprovisions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deprovisions USING (app_system() OR tenant_id = app_tenant())
    WITH CHECK (app_system() OR tenant_id = app_tenant());
-- The ledger keeps a week: windows are at most that long.
ALTER TABLE tenants ADD CONSTRAINT brake_window_at_most_a_week CHECK (brake_window_secs <= 604800);

-- A held change applies on release only to the user as they were when it was held.
ALTER TABLE held_changes ADD COLUMN user_version bigint;

-- A user with memberships cannot vanish under a concurrent membership write: the deletion removes
-- them itself (moving the groups' versions and saying so), and retries if one appeared meanwhile.
ALTER TABLE group_members DROP CONSTRAINT group_members_tenant_id_user_id_fkey;
ALTER TABLE group_members ADD CONSTRAINT group_members_tenant_id_user_id_fkey
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id);
