DROP FUNCTION brake_deprovision(uuid, uuid);
DROP FUNCTION brake_allows(double precision, bigint, bigint, bigint);
DROP FUNCTION brake_look(uuid, boolean, bigint);
DROP TRIGGER active_counted_update ON users;
DROP TRIGGER active_counted_delete ON users;
DROP TRIGGER active_counted_insert ON users;
DROP FUNCTION count_active_users();
DROP TABLE active_user_tally;
