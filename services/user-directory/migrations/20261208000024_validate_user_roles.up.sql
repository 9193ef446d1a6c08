-- The role constraint of migration 0021, checked against the rows that existed before it: its own
-- transaction, so that the scan holds only SHARE UPDATE EXCLUSIVE (reads and writes go on).
ALTER TABLE users VALIDATE CONSTRAINT users_role;
