-- The notification service's own data: its projection of recipients (built from user events,
-- never read from user-directory) and one decision per event, keyed by the event id so that a
-- redelivered event is recognised and never acted on twice.

CREATE TABLE recipients (
    tenant_id     uuid NOT NULL,
    user_id       uuid NOT NULL,
    tenant        text NOT NULL,
    email         text NOT NULL,
    given_name    text NOT NULL,
    family_name   text NOT NULL,
    display_name  text NOT NULL,
    locale        text NOT NULL,
    active        boolean NOT NULL,
    -- Deleted users receive nothing; the row stays so that a late, older event cannot revive it.
    deleted       boolean NOT NULL DEFAULT false,
    source        text NOT NULL,
    -- The user's version this row reflects; older events never overwrite newer state.
    version       bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE decisions (
    event_id      uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    -- The user (or group) the event is about.
    resource_id   uuid NOT NULL,
    event_type    text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('sent', 'suppressed', 'no_email')),
    reason        text NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_resource ON decisions (tenant_id, resource_id);
