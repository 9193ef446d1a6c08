-- Groups, with their membership as rows: a member is added or removed by one indexed write,
-- whatever the size of the group.

CREATE TABLE groups (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    display_name  text NOT NULL,
    -- Lower-cased by the service: what uniqueness and the displayName filter compare.
    display_name_folded text NOT NULL,
    external_id   text,
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- The canonical SCIM document, without members.
    document      jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX groups_display_name ON groups (tenant_id, display_name_folded);
CREATE INDEX groups_external_id ON groups (tenant_id, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE group_members (
    tenant_id     uuid NOT NULL,
    group_id      uuid NOT NULL,
    user_id       uuid NOT NULL,
    -- The member's display as the client gave it (Okta sends the user's login), if it did.
    display       text,
    added_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, group_id, user_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX group_members_user ON group_members (tenant_id, user_id);
