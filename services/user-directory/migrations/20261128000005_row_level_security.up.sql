-- Isolation in depth: every tenant-scoped table admits only the rows of the tenant named by the
-- transaction's `app.tenant_id` setting (user-directory sets it at the start of every tenant's
-- transaction), or every row when the transaction says it is the system's (`app.system = on`:
-- the outbox relay, authentication by key hash, admin commands). A transaction that sets
-- neither sees nothing. FORCE applies the policies to the tables' owner too.
--
-- The service runs its queries as `scim_directory_app` (it switches to that role on connecting),
-- a role that owns nothing and is not a superuser, so the policies apply even when the service
-- logs in as a superuser (local runs, tests). Where the login role may not create roles, the
-- role is skipped and FORCE still binds the login role as the tables' owner.

CREATE FUNCTION app_tenant() RETURNS uuid LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;
CREATE FUNCTION app_system() RETURNS boolean LANGUAGE sql STABLE AS
$$ SELECT coalesce(current_setting('app.system', true), '') = 'on' $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'groups', 'group_members', 'assignments', 'outbox', 'api_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (app_system() OR tenant_id = app_tenant()) '
            'WITH CHECK (app_system() OR tenant_id = app_tenant())', t);
    END LOOP;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'scim_directory_app')
       AND (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
        BEGIN
            CREATE ROLE scim_directory_app NOLOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL;  -- another database's migration got there first
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'scim_directory_app') THEN
        EXECUTE format('GRANT scim_directory_app TO %I', current_user);
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO scim_directory_app;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO scim_directory_app;
        GRANT EXECUTE ON FUNCTION app_tenant(), app_system() TO scim_directory_app;
        -- Tables and sequences later migrations create are the role's to use as well.
        ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO scim_directory_app;
        ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT ON SEQUENCES TO scim_directory_app;
    END IF;
END $$;
