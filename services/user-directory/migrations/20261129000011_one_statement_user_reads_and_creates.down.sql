DROP FUNCTION scim_create_user(uuid, uuid, text, text, text, boolean, text, text, text, text, text, text, text,
    text, text, jsonb, timestamptz, uuid, text, bytea, text);
DROP FUNCTION scim_user_by_id(uuid, uuid, boolean);
