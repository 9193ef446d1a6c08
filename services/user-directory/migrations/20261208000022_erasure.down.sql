-- Back to the reads of migration 0021; erased users' tombstones stay tombstones.
DROP FUNCTION scim_user_by_user_name(uuid, text, boolean);
DROP FUNCTION scim_user_by_id(uuid, uuid, boolean);

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

ALTER TABLE users DROP COLUMN erased_at, DROP COLUMN erased_by;
