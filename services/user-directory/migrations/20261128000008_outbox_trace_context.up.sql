-- The trace an event was written in (W3C traceparent), so that its publication and everything the
-- consumers do with it continue that trace.
ALTER TABLE outbox ADD COLUMN trace_context text;
