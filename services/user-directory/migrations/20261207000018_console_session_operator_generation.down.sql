ALTER TABLE console_sessions DROP COLUMN operator_generation;
