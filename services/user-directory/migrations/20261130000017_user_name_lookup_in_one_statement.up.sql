-- Okta's lookup before every create (`filter=userName eq "..."`, first page) as one statement, as
-- a read by id is (migration 0011, ADR 0017): the function scopes its own transaction to the
-- tenant, then reads the user by the folded userName, which is unique per tenant (so the first
-- page holds every match, and the total is the page's length). Row-level security applies as in
-- any scoped transaction. It was a read-only transaction: three round trips (BEGIN and the scope,
-- the SELECT, the pool's check carrying the ROLLBACK); now one.
CREATE FUNCTION scim_user_by_user_name(p_tenant uuid, p_user_name_folded text, p_groups boolean)
RETURNS TABLE (id uuid, version bigint, created_at timestamptz, updated_at timestamptz, source text,
               active boolean, document jsonb, member_of json)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    SELECT u.id, u.version, u.created_at, u.updated_at, u.source, u.active, u.document,
           CASE WHEN p_groups THEN
               (SELECT coalesce(json_agg(json_build_array(g.id, g.display_name) ORDER BY g.display_name, g.id), '[]')
                FROM group_members m JOIN groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id
                WHERE m.tenant_id = u.tenant_id AND m.user_id = u.id)
           END
    FROM users u
    WHERE u.tenant_id = p_tenant AND u.user_name_folded = p_user_name_folded;
END $$;
