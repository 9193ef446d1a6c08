DROP TABLE IF EXISTS assignments;
