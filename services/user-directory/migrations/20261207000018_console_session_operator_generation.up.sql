-- An operator's console session records which operator token opened it (a generation derived from
-- the token's digest, never the token): when the token changes, its sessions end. Operator sessions
-- opened before this column existed have none, and so end at once.
ALTER TABLE console_sessions ADD COLUMN operator_generation bytea;
