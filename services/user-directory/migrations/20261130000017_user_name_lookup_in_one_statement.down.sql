DROP FUNCTION scim_user_by_user_name(uuid, text, boolean);
