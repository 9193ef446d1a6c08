-- The mass-deprovision brake in one statement, counting active users from a tally
-- (docs/performance.md, finding 17; ADR 0012).
--
-- Past a tenant's `brake_min_users` the brake needs the tenant's active users. It counted them,
-- up to `ceil((recent + 1 + unseen) / share)` rows, twice per deprovision: at the default minimum
-- (10) that is every deprovision of a real tenant, and its cost grew with the tenant and with the
-- window's deprovisions. Active users are now tallied per tenant and stripe by triggers on
-- `users`, so that every writer of `users` counts (an older replica during a rollout included);
-- the brake sums at most 64 rows.
--
-- And the brake's steps (the guess, the tenant's lock shared or exclusive, the count under it,
-- the ledger row) were four to six round trips of the deprovisioning transaction; they are one
-- call of `brake_deprovision`, which the service makes inside that transaction.

CREATE TABLE active_user_tally (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    -- By user, so that concurrent creates and deprovisions of one tenant seldom queue on one row.
    stripe    smallint NOT NULL,
    n         integer NOT NULL,
    PRIMARY KEY (tenant_id, stripe)
);
ALTER TABLE active_user_tally ENABLE ROW LEVEL SECURITY;
ALTER TABLE active_user_tally FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON active_user_tally
    USING ((SELECT app_system()) OR tenant_id = (SELECT app_tenant()))
    WITH CHECK ((SELECT app_system()) OR tenant_id = (SELECT app_tenant()));

-- Per row, and only for the rows that change the count (the triggers' WHEN): a statement-level
-- trigger with a transition table (once per statement, set-wise) cost a create 0.08-0.14 ms more
-- of PostgreSQL's CPU; the seeding tool's set-wise inserts pay one upsert per user instead.
CREATE FUNCTION count_active_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO active_user_tally AS t (tenant_id, stripe, n)
        VALUES (OLD.tenant_id, get_byte(uuid_send(OLD.id), 15) % 64, -1)
        ON CONFLICT (tenant_id, stripe) DO UPDATE SET n = t.n + excluded.n;
    ELSE
        INSERT INTO active_user_tally AS t (tenant_id, stripe, n)
        VALUES (NEW.tenant_id, get_byte(uuid_send(NEW.id), 15) % 64, CASE WHEN NEW.active THEN 1 ELSE -1 END)
        ON CONFLICT (tenant_id, stripe) DO UPDATE SET n = t.n + excluded.n;
    END IF;
    RETURN NULL;
END $$;

-- No user changes between the backfill and the triggers: it waits for this migration.
LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE;
CREATE TRIGGER active_counted_insert AFTER INSERT ON users
    FOR EACH ROW WHEN (NEW.active) EXECUTE FUNCTION count_active_users();
CREATE TRIGGER active_counted_delete AFTER DELETE ON users
    FOR EACH ROW WHEN (OLD.active) EXECUTE FUNCTION count_active_users();
CREATE TRIGGER active_counted_update AFTER UPDATE OF active ON users
    FOR EACH ROW WHEN (OLD.active IS DISTINCT FROM NEW.active) EXECUTE FUNCTION count_active_users();
SELECT set_config('app.system', 'on', true);
INSERT INTO active_user_tally (tenant_id, stripe, n)
    SELECT tenant_id, get_byte(uuid_send(id), 15) % 64, count(*) FROM users WHERE active GROUP BY 1, 2;
SELECT set_config('app.system', '', true);

-- What the brake knows of a tenant: its settings, whether it is released or tripped, and its
-- deprovisions in the window, as if `unseen` more had happened: from the ledger's tally (rows,
-- whole minutes: never fewer than the exact count) or, `exactly`, the distinct users of the
-- ledger's window. `active` only when the verdict needs it (past the minimum).
CREATE FUNCTION brake_look(p_tenant uuid, p_exactly boolean, p_unseen bigint,
    OUT released boolean, OUT tripped boolean, OUT share double precision, OUT min_users bigint,
    OUT recent bigint, OUT active bigint)
LANGUAGE plpgsql AS $$
DECLARE
    window_secs integer;
BEGIN
    SELECT coalesce(t.brake_released_until > now(), false),
           coalesce(t.brake_tripped_at > now() - make_interval(secs => t.brake_window_secs), false),
           t.brake_share, t.brake_min_users, t.brake_window_secs
    INTO released, tripped, share, min_users, window_secs
    FROM tenants t WHERE t.id = p_tenant;
    IF released OR tripped THEN
        RETURN;
    END IF;
    IF p_exactly THEN
        SELECT count(DISTINCT d.user_id) INTO recent FROM deprovisions d
        WHERE d.tenant_id = p_tenant AND d.at > now() - make_interval(secs => window_secs);
    ELSE
        SELECT coalesce(sum(d.n), 0) INTO recent FROM deprovision_tally d
        WHERE d.tenant_id = p_tenant AND d.minute >= date_trunc('minute', now() - make_interval(secs => window_secs));
    END IF;
    recent := recent + p_unseen;
    IF recent >= min_users THEN
        SELECT coalesce(sum(a.n), 0) INTO active FROM active_user_tally a WHERE a.tenant_id = p_tenant;
    END IF;
END $$;

-- Whether one more deprovision may pass when `recent` happened in the window and `active` users
-- are active: up to `share` of those active at the window's start (still active, or deprovisioned
-- since), and always up to `min_users` (below it `active` is not needed: `brake_look` leaves it
-- NULL there).
CREATE FUNCTION brake_allows(share double precision, min_users bigint, recent bigint, active bigint)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT recent + 1 <= greatest(min_users, ceil(share * (coalesce(active, 0) + recent))::bigint)
$$;

-- Decides, inside a deprovisioning transaction, whether the deprovision of `p_user` may proceed,
-- and if so records it in the ledger. Returns `allow`, `tripped` (tripped earlier in the window),
-- `trip` (this one trips it; with the counts), or `unavailable` (the count moved past its margin
-- while the lock was awaited: answered 503, the retry is counted exactly).
--
-- Counting must see every deprovision that could commit beside this one. Near the limit,
-- deprovisions are counted one after another under an exclusive per-tenant lock (held to
-- commit). Far from it, where even every other connection the server allows deprovisioning in
-- this tenant unseen could not reach the limit, they take the lock shared, so that they neither
-- wait for each other's commits nor overlap an exact count. Each statement of this (volatile)
-- function sees what committed before it began: the count after the lock sees what committed
-- while the lock was awaited.
CREATE FUNCTION brake_deprovision(p_tenant uuid, p_user uuid,
    OUT verdict text, OUT recent bigint, OUT active bigint)
LANGUAGE plpgsql AS $$
DECLARE
    slack bigint := current_setting('max_connections')::bigint;
    s record;
    far boolean;
BEGIN
    s := brake_look(p_tenant, false, 2 * slack);
    IF NOT (s.released OR s.tripped) THEN
        -- Far enough even were as many deprovisions again to commit before the lock is taken.
        far := brake_allows(s.share, s.min_users, s.recent, s.active);
        IF far THEN
            PERFORM pg_advisory_xact_lock_shared(hashtextextended('brake:' || p_tenant::text, 0));
            s := brake_look(p_tenant, false, slack);
        ELSE
            PERFORM pg_advisory_xact_lock(hashtextextended('brake:' || p_tenant::text, 0));
            s := brake_look(p_tenant, true, 0);
        END IF;
    END IF;
    IF s.tripped AND NOT s.released THEN
        verdict := 'tripped';
    ELSIF s.released OR brake_allows(s.share, s.min_users, s.recent, s.active) THEN
        verdict := 'allow';
        INSERT INTO deprovisions (tenant_id, user_id) VALUES (p_tenant, p_user);
    ELSIF far THEN
        verdict := 'unavailable';
    ELSE
        verdict := 'trip';
        recent := s.recent;
        active := s.active;
    END IF;
END $$;
