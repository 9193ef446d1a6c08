-- The notification service's own data: its projection of recipients (built from events, never
-- read from user-directory), one decision per event keyed by the event id (so a redelivered
-- event is recognised and never acted on twice), and the emails it decided to send with their
-- delivery state (pending, sent, failed for good, or dead-lettered after the last attempt).

CREATE TABLE recipients (
    tenant_id     uuid NOT NULL,
    user_id       uuid NOT NULL,
    tenant        text NOT NULL,
    tenant_name   text NOT NULL DEFAULT '',
    user_name     text NOT NULL DEFAULT '',
    email         text NOT NULL,
    given_name    text NOT NULL,
    family_name   text NOT NULL,
    display_name  text NOT NULL,
    locale        text NOT NULL,
    active        boolean NOT NULL,
    -- Deleted users receive nothing; the row stays so that a late, older event cannot revive it.
    deleted       boolean NOT NULL DEFAULT false,
    source        text NOT NULL,
    -- When the first-assignment email was decided: later assignments get the assignment email.
    first_email_at timestamptz,
    -- The user's version this row reflects; older events never overwrite newer state.
    version       bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE decisions (
    event_id      uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    -- The user (or group, or assignment) the event is about.
    resource_id   uuid NOT NULL,
    event_type    text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('send', 'suppressed', 'no_email')),
    reason        text NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_resource ON decisions (tenant_id, resource_id);

CREATE TABLE emails (
    id            uuid PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE REFERENCES decisions (event_id),
    tenant_id     uuid NOT NULL,
    user_id       uuid NOT NULL,
    template      text NOT NULL,
    to_address    text NOT NULL,
    subject       text NOT NULL,
    body_text     text NOT NULL,
    body_html     text NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed', 'dead')),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    finished_at   timestamptz
);
CREATE INDEX emails_dead ON emails (created_at) WHERE status = 'dead';
