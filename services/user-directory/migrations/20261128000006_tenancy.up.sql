-- Tenancy controls: pause, per-tenant rate limits, the mass-deprovision brake and the changes it
-- holds, and the request log.

ALTER TABLE tenants
    -- Provisioning paused by an operator: every SCIM request is answered 503 with Retry-After.
    ADD COLUMN paused boolean NOT NULL DEFAULT false,
    -- Requests per second and burst; NULL for the deployment's default.
    ADD COLUMN rate_limit_per_second integer CHECK (rate_limit_per_second > 0),
    ADD COLUMN rate_limit_burst integer CHECK (rate_limit_burst > 0),
    -- The brake trips when more than this share of the tenant's active users (and at least
    -- brake_min_users) is deactivated within brake_window_secs.
    ADD COLUMN brake_share double precision NOT NULL DEFAULT 0.2 CHECK (brake_share > 0 AND brake_share <= 1),
    ADD COLUMN brake_window_secs integer NOT NULL DEFAULT 3600 CHECK (brake_window_secs > 0),
    ADD COLUMN brake_min_users integer NOT NULL DEFAULT 10 CHECK (brake_min_users >= 0),
    ADD COLUMN brake_tripped_at timestamptz,
    -- After a release, deactivations flow without the brake until then.
    ADD COLUMN brake_released_until timestamptz;

CREATE INDEX users_archived ON users (tenant_id, archived_at) WHERE archived_at IS NOT NULL;

-- Deactivations (and deletions) held by the brake, one per user, until released or rejected.
CREATE TABLE held_changes (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    user_id       uuid NOT NULL,
    -- 'patch', 'replace' or 'delete', and the request's body (no secrets: sanitised upstream).
    kind          text NOT NULL CHECK (kind IN ('patch', 'replace', 'delete')),
    body          jsonb,
    held_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, user_id)
);

-- Every SCIM request, per tenant, bodies redacted.
CREATE TABLE request_log (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    at            timestamptz NOT NULL,
    method        text NOT NULL,
    path          text NOT NULL,
    status        integer NOT NULL,
    latency_ms    double precision NOT NULL,
    user_agent    text NOT NULL DEFAULT '',
    event_ids     uuid[] NOT NULL DEFAULT '{}',
    request_body  text,
    response_body text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX request_log_at ON request_log (tenant_id, at DESC);
CREATE INDEX request_log_prune ON request_log (at);

ALTER TABLE held_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE held_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON held_changes USING (app_system() OR tenant_id = app_tenant())
    WITH CHECK (app_system() OR tenant_id = app_tenant());
ALTER TABLE request_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE request_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON request_log USING (app_system() OR tenant_id = app_tenant())
    WITH CHECK (app_system() OR tenant_id = app_tenant());
