-- Content assigned to users. The notification service decides from the content.assigned event
-- (the first assignment a user ever gets is their first email).
CREATE TABLE assignments (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    user_id       uuid NOT NULL,
    content_id    text NOT NULL,
    title         text NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
-- Assigning the same content twice is the same assignment.
CREATE UNIQUE INDEX assignments_user_content ON assignments (tenant_id, user_id, content_id);
