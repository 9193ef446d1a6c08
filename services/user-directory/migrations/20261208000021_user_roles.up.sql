-- Roles are the platform's, set by the tenant's admin (ADR 0024): `learner` (every provisioned
-- user), `manager`, `admin`. SCIM never writes the column after the create. The one-statement
-- reads and create (migrations 0011, 0017) return it too, so that every event a write emits
-- carries the user's real role, not the default.
-- NOT VALID: the constraint binds every write from now on at once, without a scan of the table
-- under this migration's exclusive lock; migration 0024 validates the existing rows, under a lock
-- that lets reads and writes go on.
ALTER TABLE users ADD CONSTRAINT users_role CHECK (role IN ('learner', 'manager', 'admin')) NOT VALID;

-- SCIM's `roles` is now accepted and never stored (write-only in /Schemas, as the password is);
-- what identity providers sent before goes, so that no read returns it.
-- Every tenant's rows: the system scope, for this transaction only (row-level security binds the
-- owner too).
SELECT set_config('app.system', 'on', true);
UPDATE users SET document = document - 'roles' WHERE document ? 'roles';

DROP FUNCTION scim_user_by_user_name(uuid, text, boolean);
DROP FUNCTION scim_user_by_id(uuid, uuid, boolean);
DROP FUNCTION scim_create_user(uuid, uuid, text, text, text, boolean, text, text, text, text, text, text, text,
    text, text, jsonb, timestamptz, uuid, text, bytea, text);

CREATE FUNCTION scim_user_by_id(p_tenant uuid, p_id uuid, p_groups boolean)
RETURNS TABLE (id uuid, version bigint, created_at timestamptz, updated_at timestamptz, source text,
               active boolean, document jsonb, role text, member_of json)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    SELECT u.id, u.version, u.created_at, u.updated_at, u.source, u.active, u.document, u.role,
           CASE WHEN p_groups THEN
               (SELECT coalesce(json_agg(json_build_array(g.id, g.display_name) ORDER BY g.display_name, g.id), '[]')
                FROM group_members m JOIN groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id
                WHERE m.tenant_id = u.tenant_id AND m.user_id = u.id)
           END
    FROM users u
    WHERE u.tenant_id = p_tenant AND u.id = p_id;
END $$;

CREATE FUNCTION scim_user_by_user_name(p_tenant uuid, p_user_name_folded text, p_groups boolean)
RETURNS TABLE (id uuid, version bigint, created_at timestamptz, updated_at timestamptz, source text,
               active boolean, document jsonb, role text, member_of json)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    SELECT * FROM scim_user_by_id(p_tenant,
        (SELECT u.id FROM users u WHERE u.tenant_id = p_tenant AND u.user_name_folded = p_user_name_folded),
        p_groups);
END $$;

CREATE FUNCTION scim_create_user(
    p_tenant uuid, p_id uuid, p_user_name text, p_user_name_folded text, p_external_id text,
    p_active boolean, p_given_name text, p_family_name text, p_display_name text, p_email text,
    p_locale text, p_cost_center text, p_division text, p_role text, p_source text, p_document jsonb,
    p_at timestamptz, p_event_id uuid, p_subject text, p_payload bytea, p_trace_context text)
RETURNS TABLE (id uuid, version bigint, created_at timestamptz, updated_at timestamptz, source text,
               active boolean, document jsonb, role text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    INSERT INTO users AS u (tenant_id, id, user_name, user_name_folded, external_id, active, archived_at,
        given_name, family_name, display_name, email, locale, cost_center, division, role, source,
        version, created_at, updated_at, document)
    VALUES (p_tenant, p_id, p_user_name, p_user_name_folded, p_external_id, p_active,
        CASE WHEN p_active THEN NULL ELSE p_at END, p_given_name, p_family_name, p_display_name,
        p_email, p_locale, p_cost_center, p_division, p_role, p_source, 1, p_at, p_at, p_document)
    RETURNING u.id, u.version, u.created_at, u.updated_at, u.source, u.active, u.document, u.role;
    INSERT INTO outbox (event_id, tenant_id, subject, payload, trace_context)
    VALUES (p_event_id, p_tenant, p_subject, p_payload, p_trace_context);
END $$;
