-- The gateway writes the request log in batches that mix tenants. A request of a tenant that is
-- being offboarded (authenticated before its suspension, logged after its rows were deleted)
-- must not make the whole batch fail on the foreign key, and with it the other tenants' records:
-- the records of a tenant that no longer exists are dropped (ADR 0026).
CREATE OR REPLACE FUNCTION scim_record_requests(
    p_tenant_id uuid[], p_id uuid[], p_at timestamptz[], p_method text[], p_path text[], p_status int4[],
    p_latency_ms float8[], p_user_agent text[], p_event_ids text[], p_request_body text[], p_response_body text[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.system', 'on', true);
    INSERT INTO request_log (tenant_id, id, at, method, path, status, latency_ms, user_agent, event_ids,
                             request_body, response_body)
    SELECT t, i, a, m, p, s, l, u, e::uuid[], rq, rs
    FROM unnest(p_tenant_id, p_id, p_at, p_method, p_path, p_status, p_latency_ms, p_user_agent, p_event_ids,
                p_request_body, p_response_body) AS r(t, i, a, m, p, s, l, u, e, rq, rs)
    WHERE EXISTS (SELECT 1 FROM tenants WHERE tenants.id = r.t FOR KEY SHARE)
    ON CONFLICT DO NOTHING;
END $$;
