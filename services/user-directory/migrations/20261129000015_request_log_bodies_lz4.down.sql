ALTER TABLE request_log ALTER COLUMN request_body SET COMPRESSION default,
                        ALTER COLUMN response_body SET COMPRESSION default;
