-- The tenant console: keys gain scopes, and console sessions are kept server-side.

-- `scim` opens the SCIM API (the identity provider's key); `admin` opens the tenant console and
-- the tenant REST API. Keys issued before scopes existed keep doing both, as they did.
ALTER TABLE api_keys ADD COLUMN scopes text[] NOT NULL DEFAULT '{scim,admin}'
    CHECK (cardinality(scopes) > 0 AND scopes <@ '{scim,admin}'::text[]);

-- A signed-in console session. The cookie carries a 256-bit random id; only its SHA-256 is kept.
-- A session ends at sign-out, after `idle` without a request, when its key is revoked or expires,
-- or when the tenant is suspended. An operator's session has no key.
CREATE TABLE console_sessions (
    id_hash       bytea PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    key_id        uuid REFERENCES api_keys (id),
    operator      boolean NOT NULL DEFAULT false,
    -- The token every form of the session carries (synchroniser token against CSRF).
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (operator OR key_id IS NOT NULL)
);
CREATE INDEX console_sessions_tenant ON console_sessions (tenant_id);
CREATE INDEX console_sessions_seen ON console_sessions (last_seen_at);

ALTER TABLE console_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE console_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON console_sessions USING (app_system() OR tenant_id = app_tenant())
    WITH CHECK (app_system() OR tenant_id = app_tenant());
