DROP INDEX emails_tenant_time;
DROP INDEX decisions_tenant_time;
