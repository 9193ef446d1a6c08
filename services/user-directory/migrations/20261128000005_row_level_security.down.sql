DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'groups', 'group_members', 'assignments', 'outbox', 'api_keys'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t);
    END LOOP;
END $$;
DROP FUNCTION IF EXISTS app_tenant();
DROP FUNCTION IF EXISTS app_system();
