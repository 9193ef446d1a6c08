DROP TABLE console_sessions;
ALTER TABLE api_keys DROP COLUMN scopes;
