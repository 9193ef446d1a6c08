-- A claim names its claimer: a worker whose lease expired (and whose email another worker took
-- over) can no longer record an outcome over the new claimer's.
ALTER TABLE emails ADD COLUMN claim_id uuid;
