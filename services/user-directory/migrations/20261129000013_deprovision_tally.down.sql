DROP TRIGGER counted ON deprovisions;
DROP FUNCTION count_deprovision();
DROP TABLE deprovision_tally;
