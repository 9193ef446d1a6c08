-- The relay is no longer woken by a NOTIFY inside every write transaction: PostgreSQL serialises
-- the commits of all transactions that notified (a cluster-wide lock held through the WAL
-- flush), which made every SCIM write wait for the one before it. The service now wakes its
-- relay after each commit, and other replicas' relays with a NOTIFY of its own, outside writes.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
