ALTER TABLE tenants DROP COLUMN max_in_flight;
