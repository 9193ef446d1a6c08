-- Tenants, their API keys (hashes only), users with typed columns beside the full SCIM document,
-- and the transactional outbox of lifecycle events.

CREATE TABLE tenants (
    id            uuid PRIMARY KEY,
    subdomain     text NOT NULL UNIQUE
                  CHECK (subdomain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    display_name  text NOT NULL,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    name          text NOT NULL DEFAULT '',
    -- The first characters of the key, shown in listings so an operator can tell keys apart.
    prefix        text NOT NULL,
    -- SHA-256 of the whole key. Keys are 256-bit random, so a fast hash is as strong as a slow one.
    key_hash      bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    expires_at    timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE users (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    -- As sent.
    user_name     text NOT NULL,
    -- Lower-cased by the service (Unicode, whatever the database's locale): what uniqueness and
    -- the userName filter compare.
    user_name_folded text NOT NULL,
    external_id   text,
    active        boolean NOT NULL,
    archived_at   timestamptz,
    given_name    text NOT NULL DEFAULT '',
    family_name   text NOT NULL DEFAULT '',
    display_name  text NOT NULL DEFAULT '',
    email         text NOT NULL DEFAULT '',
    locale        text NOT NULL DEFAULT '',
    cost_center   text NOT NULL DEFAULT '',
    division      text NOT NULL DEFAULT '',
    -- The platform role. Provisioning creates learners and never changes a role.
    role          text NOT NULL DEFAULT 'learner',
    source        text NOT NULL CHECK (source IN ('scim', 'admin', 'import')),
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- The canonical SCIM document (without id, meta, schemas and secrets).
    document      jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX users_user_name ON users (tenant_id, user_name_folded);
CREATE INDEX users_external_id ON users (tenant_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX users_email ON users (tenant_id, lower(email));

-- Written in the same transaction as the change it describes; the relay publishes rows in seq
-- order and deletes them once the stream has acknowledged them: what is here is the backlog.
CREATE TABLE outbox (
    seq           bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    tenant_id     uuid NOT NULL,
    subject       text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Wakes the relay as soon as a change commits (notifications are delivered at commit).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
