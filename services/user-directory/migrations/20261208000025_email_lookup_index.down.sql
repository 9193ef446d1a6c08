DROP TRIGGER IF EXISTS user_emails_changed ON users;
DROP TRIGGER IF EXISTS user_emails_kept ON users;
DROP FUNCTION IF EXISTS keep_user_emails();
DROP FUNCTION IF EXISTS user_emails_of(jsonb);
DROP TABLE IF EXISTS user_emails;
