-- The row-level security policies read the transaction's scope once per statement, not once per
-- row. `app_tenant()` and `app_system()` are STABLE, but a policy calling them directly evaluates
-- them for every row it filters (a settings lookup and a text-to-uuid parse each time); wrapped in
-- a scalar sub-select they become an init plan, computed once and then compared. Same admission
-- rule (ADR 0011); scans of many rows (the brake's count of a window's deprovisions, list pages,
-- counts, email filters) no longer pay per row (docs/performance.md, finding 12).
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'groups', 'group_members', 'assignments', 'outbox', 'api_keys',
                             'held_changes', 'request_log', 'deprovisions', 'console_sessions'] LOOP
        EXECUTE format(
            'ALTER POLICY tenant_isolation ON %I USING ((SELECT app_system()) OR tenant_id = (SELECT app_tenant())) '
            'WITH CHECK ((SELECT app_system()) OR tenant_id = (SELECT app_tenant()))', t);
    END LOOP;
END $$;
