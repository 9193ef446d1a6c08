DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'groups', 'group_members', 'assignments', 'outbox', 'api_keys',
                             'held_changes', 'request_log', 'deprovisions', 'console_sessions'] LOOP
        EXECUTE format(
            'ALTER POLICY tenant_isolation ON %I USING (app_system() OR tenant_id = app_tenant()) '
            'WITH CHECK (app_system() OR tenant_id = app_tenant())', t);
    END LOOP;
END $$;
