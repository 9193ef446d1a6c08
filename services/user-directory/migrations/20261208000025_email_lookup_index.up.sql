-- Okta's and Entra's lookups by email (`emails[type eq "work"].value eq "x"`, `emails.value eq
-- "x"`) read the emails array of the document, which no index served: each one read every user of
-- the tenant, 16 ms in a 100-user tenant and growing with it. This index holds one key per email
-- of each user, the tenant's id and the value folded as the filter folds it (`lower`), so a lookup
-- reads the few rows of that tenant with that email and checks the rest of the condition on them.
-- The SQL filter (src/sql_filter.rs) adds, beside the exact condition, that the user is among those
-- whose keys contain `<tenant> <value>`; it is implied by the exact one, so results are unchanged.
--
-- Built in this migration's transaction: writes to `users` wait while it builds (seconds per
-- million users). On a large deployment, build it beforehand without blocking writes, with the
-- same definition and CREATE INDEX CONCURRENTLY (docs/runbook.md); this then finds it there.
CREATE OR REPLACE FUNCTION scim_user_email_keys(p_tenant uuid, p_document jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(p_tenant::text || ' ' || lower(e.v->>'value')), '{}')
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_document->'emails') = 'array'
                                   THEN p_document->'emails' ELSE '[]'::jsonb END) AS e(v)
    WHERE e.v->>'value' IS NOT NULL
$$;

-- Without the pending list (fastupdate), a lookup never scans recent insertions one by one, and
-- no insert pays for merging them all (autovacuum, which would merge them, may be off).
CREATE INDEX IF NOT EXISTS users_email_keys ON users USING gin (scim_user_email_keys(tenant_id, document))
    WITH (fastupdate = off);
