UPDATE emails SET status = 'pending' WHERE status = 'sending';
ALTER TABLE emails DROP COLUMN lease_until;
ALTER TABLE emails DROP CONSTRAINT emails_status_check;
ALTER TABLE emails ADD CONSTRAINT emails_status_check CHECK (status IN ('pending', 'sent', 'failed', 'dead'));
