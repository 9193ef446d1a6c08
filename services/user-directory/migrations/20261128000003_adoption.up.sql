-- What a SCIM POST does when its userName belongs to a user the customer's admin created before
-- provisioning was switched on: 'adopt' links that user (the default), 'conflict' answers 409.
ALTER TABLE tenants ADD COLUMN adoption_policy text NOT NULL DEFAULT 'adopt'
    CHECK (adoption_policy IN ('adopt', 'conflict'));

-- Active users no identity provider has linked yet, per tenant.
CREATE INDEX users_unlinked ON users (tenant_id, id) WHERE source <> 'scim' AND active;
