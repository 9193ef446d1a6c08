-- A tenant's own limit on its requests in flight at once in each gateway replica (NULL: the
-- deployment's TENANT_MAX_IN_FLIGHT). Support raises it with
-- `user-directory tenant limits SUB --in-flight N`.
ALTER TABLE tenants ADD COLUMN max_in_flight integer CHECK (max_in_flight > 0);
