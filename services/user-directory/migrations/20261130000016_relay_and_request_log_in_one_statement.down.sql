DROP FUNCTION scim_record_requests(uuid[], uuid[], timestamptz[], text[], text[], int4[], float8[], text[], text[],
                                   text[], text[]);
DROP FUNCTION scim_relay_round(bigint[], integer);
