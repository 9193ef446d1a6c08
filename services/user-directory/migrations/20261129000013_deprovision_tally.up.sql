-- The brake's cheap question, "is the limit far?", reads a tally instead of counting the window's
-- ledger (linear in the window: an hour-long deprovisioning paid more per deactivation the longer
-- it went; docs/performance.md, finding 14). The tally counts ledger rows per tenant, minute and
-- stripe (by user, so that concurrent deprovisions do not queue on one row). Rows, not distinct
-- users, and whole minutes: never fewer than what the brake counts exactly, so it can only say
-- "far" when the exact count would. Near the limit the brake still counts the ledger exactly.
-- A trigger keeps it, so that every writer of the ledger counts in it, an older replica during a
-- rollout included.
CREATE TABLE deprovision_tally (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    minute    timestamptz NOT NULL,
    stripe    smallint NOT NULL,
    n         integer NOT NULL,
    PRIMARY KEY (tenant_id, minute, stripe)
);
ALTER TABLE deprovision_tally ENABLE ROW LEVEL SECURITY;
ALTER TABLE deprovision_tally FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deprovision_tally
    USING ((SELECT app_system()) OR tenant_id = (SELECT app_tenant()))
    WITH CHECK ((SELECT app_system()) OR tenant_id = (SELECT app_tenant()));

CREATE FUNCTION count_deprovision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deprovision_tally AS t (tenant_id, minute, stripe, n)
    VALUES (NEW.tenant_id, date_trunc('minute', NEW.at), get_byte(uuid_send(NEW.user_id), 15) % 16, 1)
    ON CONFLICT (tenant_id, minute, stripe) DO UPDATE SET n = t.n + 1;
    RETURN NULL;
END $$;

-- No deprovision commits between the backfill and the trigger: it waits for this migration.
LOCK TABLE deprovisions IN SHARE ROW EXCLUSIVE MODE;
CREATE TRIGGER counted AFTER INSERT ON deprovisions FOR EACH ROW EXECUTE FUNCTION count_deprovision();
SELECT set_config('app.system', 'on', true);
INSERT INTO deprovision_tally (tenant_id, minute, stripe, n)
    SELECT tenant_id, date_trunc('minute', at), 0, count(*) FROM deprovisions GROUP BY 1, 2;
SELECT set_config('app.system', '', true);
