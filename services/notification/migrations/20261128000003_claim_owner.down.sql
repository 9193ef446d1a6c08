ALTER TABLE emails DROP COLUMN claim_id;
