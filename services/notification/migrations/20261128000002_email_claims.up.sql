-- An email is claimed before each send attempt ('sending', with a lease), so that two workers (a
-- redelivery racing a slow send, a re-drive racing the consumer) never send it both; a claim
-- whose worker died expires with its lease.
ALTER TABLE emails DROP CONSTRAINT emails_status_check;
ALTER TABLE emails ADD CONSTRAINT emails_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead'));
ALTER TABLE emails ADD COLUMN lease_until timestamptz;
