DROP FUNCTION scim_prune_outbox(timestamptz, integer);
DROP FUNCTION scim_relay_round(bigint[], bigint[], bigint, integer);
CREATE OR REPLACE FUNCTION scim_relay_round(p_published bigint[], p_limit integer)
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
DELETE FROM outbox WHERE stream_seq IS NOT NULL;
DROP INDEX outbox_stream_seq;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at, DROP COLUMN stream_seq;
