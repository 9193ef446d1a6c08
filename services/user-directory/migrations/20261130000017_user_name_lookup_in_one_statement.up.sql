-- Okta's lookup before every create (`filter=userName eq "..."`, first page) as one statement, as
-- a read by id is (migration 0011, ADR 0017): the function scopes its own transaction to the
-- tenant, finds the user's id by the folded userName, which is unique per tenant (so the first
-- page holds every match, and the total is the page's length), and reads the user as
-- `scim_user_by_id` does (the same columns, the groups when asked). Row-level security applies as
-- in any scoped transaction. It was a read-only transaction: three round trips (BEGIN and the
-- scope, the SELECT, the pool's check carrying the ROLLBACK); now one.
CREATE FUNCTION scim_user_by_user_name(p_tenant uuid, p_user_name_folded text, p_groups boolean)
RETURNS TABLE (id uuid, version bigint, created_at timestamptz, updated_at timestamptz, source text,
               active boolean, document jsonb, member_of json)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
    SELECT * FROM scim_user_by_id(p_tenant,
        (SELECT u.id FROM users u WHERE u.tenant_id = p_tenant AND u.user_name_folded = p_user_name_folded),
        p_groups);
END $$;
