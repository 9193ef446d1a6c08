-- The console's health page asks for a tenant's last 24 hours of decisions and emails.
CREATE INDEX decisions_tenant_time ON decisions (tenant_id, decided_at);
CREATE INDEX emails_tenant_time ON emails (tenant_id, created_at);
