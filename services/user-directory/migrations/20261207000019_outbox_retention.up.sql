-- The outbox keeps what it published (ADR 0022). A row was deleted as soon as JetStream
-- acknowledged its event, so a broker that then lost the event (a node lost with its disk, an
-- operating-system crash before the server's fsync) left no trace to publish it from again. Now
-- an acknowledged row records the stream sequence the event was stored at and when, and is kept
-- for OUTBOX_RETENTION_HOURS (the relay prunes it in batches after that):
--   - `stream_seq IS NULL`: not published yet (the backlog, what the relay reads);
--   - after reading the stream's tail, the relay makes every row the stream acknowledged beyond
--     that tail unpublished again (the stream lost them), and publishes them again, same ids;
--   - `user-directory outbox republish` does the same for a tenant's rows since a time.
ALTER TABLE outbox ADD COLUMN stream_seq bigint, ADD COLUMN published_at timestamptz;
-- Every write inserts into the first index (the backlog the relay reads); the second is written by
-- the relay only. The republish command, rare, reads the table without an index of its own.
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE stream_seq IS NULL;
CREATE INDEX outbox_stream_seq ON outbox (stream_seq) WHERE stream_seq IS NOT NULL;

-- A relay round: records where the stream stored the events it acknowledged in the previous
-- round (`p_published`, `p_stream_seqs`: possibly empty); when the relay has just read the
-- stream's tail (`p_tail`), makes the rows acknowledged beyond it unpublished again; then returns
-- the oldest unpublished rows in `seq` order. One statement (ADR 0019).
CREATE FUNCTION scim_relay_round(p_published bigint[], p_stream_seqs bigint[], p_tail bigint, p_limit integer)
RETURNS TABLE (seq bigint, event_id uuid, subject text, payload bytea, trace_context text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('app.system', 'on', true);
    IF cardinality(p_published) > 0 THEN
        UPDATE outbox o SET stream_seq = p.stream_seq, published_at = now()
        FROM unnest(p_published, p_stream_seqs) AS p(seq, stream_seq)
        WHERE o.seq = p.seq;
    END IF;
    IF p_tail IS NOT NULL THEN
        UPDATE outbox o SET stream_seq = NULL, published_at = NULL WHERE o.stream_seq > p_tail;
        IF FOUND THEN
            RAISE WARNING 'the stream lost events it had acknowledged (its tail is %): publishing them again', p_tail;
        END IF;
    END IF;
    RETURN QUERY
    SELECT o.seq, o.event_id, o.subject, o.payload, o.trace_context FROM outbox o
    WHERE o.stream_seq IS NULL ORDER BY o.seq LIMIT p_limit;
END $$;

-- The previous round, as a relay of the previous release calls it during a rolling update:
-- it keeps the rows too (stream sequence unknown: 0, never made unpublished by a tail).
CREATE OR REPLACE FUNCTION scim_relay_round(p_published bigint[], p_limit integer)
RETURNS TABLE (seq bigint, event_id uuid, subject text, payload bytea, trace_context text)
LANGUAGE sql AS $$
    SELECT * FROM scim_relay_round(p_published, array_fill(0::bigint, ARRAY[cardinality(p_published)]), NULL, p_limit);
$$;

-- Forgets published rows older than `p_before`, at most `p_limit` of them (oldest first);
-- returns how many. The relay calls it until it returns less than the limit.
CREATE FUNCTION scim_prune_outbox(p_before timestamptz, p_limit integer)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('app.system', 'on', true);
    DELETE FROM outbox WHERE seq IN (
        SELECT o.seq FROM outbox o
        WHERE o.stream_seq IS NOT NULL AND o.published_at < p_before
        ORDER BY o.seq LIMIT p_limit);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
