DROP TABLE IF EXISTS request_log;
DROP TABLE IF EXISTS held_changes;
DROP INDEX IF EXISTS users_archived;
ALTER TABLE tenants
    DROP COLUMN IF EXISTS paused, DROP COLUMN IF EXISTS rate_limit_per_second, DROP COLUMN IF EXISTS rate_limit_burst,
    DROP COLUMN IF EXISTS brake_share, DROP COLUMN IF EXISTS brake_window_secs, DROP COLUMN IF EXISTS brake_min_users,
    DROP COLUMN IF EXISTS brake_tripped_at, DROP COLUMN IF EXISTS brake_released_until;
