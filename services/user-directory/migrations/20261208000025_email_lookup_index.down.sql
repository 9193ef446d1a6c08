DROP INDEX IF EXISTS users_email_keys;
DROP FUNCTION IF EXISTS scim_user_email_keys(uuid, jsonb);
