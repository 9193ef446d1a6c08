-- Okta's and Entra's lookups by email (`emails[type eq "work"].value eq "x"`, `emails.value eq
-- "x"`) read the emails array of the document, which no index served: each one read every user of
-- the tenant, 16 ms in a 100-user tenant and growing with it.
--
-- The emails of each user, folded as the filter folds them (`lower`), in a table of their own with
-- a b-tree index. Not a GIN index on the document: the service's connections are bound by
-- row-level security, under which PostgreSQL uses an index only for leakproof operators, and no
-- GIN operator (`@>`) is one; `=` on text and uuid are. The SQL filter (src/sql_filter.rs) adds,
-- beside the exact condition, that the user is among those this table finds; implied by the exact
-- condition, so results are unchanged.
CREATE TABLE user_emails (
    tenant_id uuid NOT NULL,
    user_id   uuid NOT NULL,
    email     text NOT NULL,
    PRIMARY KEY (tenant_id, email, user_id)
);
CREATE INDEX user_emails_user ON user_emails (tenant_id, user_id);
ALTER TABLE user_emails ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_emails FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_emails
    USING ((SELECT app_system()) OR tenant_id = (SELECT app_tenant()))
    WITH CHECK ((SELECT app_system()) OR tenant_id = (SELECT app_tenant()));

-- Kept by a trigger, so that every writer of `users` keeps it: creates, PUT/PATCH, erasure (whose
-- tombstone has no emails), deletion, seeding, offboarding.
CREATE FUNCTION user_emails_of(p_document jsonb) RETURNS SETOF text LANGUAGE sql IMMUTABLE AS $$
    SELECT DISTINCT lower(e.v->>'value')
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_document->'emails') = 'array'
                                   THEN p_document->'emails' ELSE '[]'::jsonb END) AS e(v)
    WHERE e.v->>'value' IS NOT NULL
$$;

CREATE FUNCTION keep_user_emails() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM user_emails WHERE tenant_id = OLD.tenant_id AND user_id = OLD.id;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO user_emails (tenant_id, user_id, email)
        SELECT NEW.tenant_id, NEW.id, m FROM user_emails_of(NEW.document) AS m;
    END IF;
    RETURN NULL;
END
$$;

-- The triggers first: from here on, writes to `users` wait for this migration (its lock), so the
-- backfill below misses none. An update that leaves the emails as they were rewrites nothing.
CREATE TRIGGER user_emails_kept AFTER INSERT OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION keep_user_emails();
CREATE TRIGGER user_emails_changed AFTER UPDATE OF document ON users
    FOR EACH ROW WHEN (OLD.document->'emails' IS DISTINCT FROM NEW.document->'emails')
    EXECUTE FUNCTION keep_user_emails();

SELECT set_config('app.system', 'on', true);
INSERT INTO user_emails (tenant_id, user_id, email)
SELECT u.tenant_id, u.id, m FROM users u, user_emails_of(u.document) AS m;
