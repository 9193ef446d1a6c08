-- The outbox relay's round and the request log's write as one statement each (ADR 0019), like a
-- tenant's reads and creates (ADR 0017): a statement outside a transaction block is its own
-- transaction, the function gives it the system scope (`set_config(.., true)` lasts until that
-- transaction ends, so nothing of it stays on the pooled connection), then does the work. Both
-- run with the caller's rights (SECURITY INVOKER), as `scim_directory_app`, under the same
-- row-level security as before.
--
-- A relay round was two transactions, seven round trips with the pool's checks (BEGIN and the
-- scope, the SELECT, the check that sends the ROLLBACK; BEGIN and the scope, the DELETE, COMMIT,
-- the check); a batch of the request log four. Now one each, and no transaction of theirs waits
-- for a pooled connection while a tenant's single statements run.

-- Forgets the rows the stream acknowledged in the previous round (`p_published`, possibly
-- empty), then returns the oldest unpublished rows in `seq` order.
CREATE FUNCTION scim_relay_round(p_published bigint[], p_limit integer)
RETURNS TABLE (seq bigint, event_id uuid, subject text, payload bytea, trace_context text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.system', 'on', true);
    IF cardinality(p_published) > 0 THEN
        DELETE FROM outbox o WHERE o.seq = ANY (p_published);
    END IF;
    RETURN QUERY
    SELECT o.seq, o.event_id, o.subject, o.payload, o.trace_context FROM outbox o ORDER BY o.seq LIMIT p_limit;
END $$;

-- Stores a batch of logged requests (of any tenants), its columns as arrays; a request already
-- stored (the gateway retried a batch) is kept as it was.
CREATE FUNCTION scim_record_requests(
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
    ON CONFLICT DO NOTHING;
END $$;
