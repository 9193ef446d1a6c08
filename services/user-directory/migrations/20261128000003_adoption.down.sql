DROP INDEX IF EXISTS users_unlinked;
ALTER TABLE tenants DROP COLUMN IF EXISTS adoption_policy;
