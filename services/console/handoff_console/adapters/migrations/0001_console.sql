-- The console's own facts: who may sign in, their sessions, what they changed and which
-- referrals they looked at. Everything else it shows belongs to the services' APIs.
CREATE TABLE accounts (
    account_id    uuid PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    display_name  text NOT NULL,
    password_hash text NOT NULL,  -- Argon2id, PHC string
    role          text NOT NULL CHECK (role IN ('coordinator', 'supervisor', 'read_only')),
    states        text[] NOT NULL DEFAULT '{}',
    sites         text[] NOT NULL DEFAULT '{}',
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a session's cookie value is kept: a copy of this table signs nobody in.
CREATE TABLE sessions (
    session_hash bytea PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE changes (
    change_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    account_id uuid NOT NULL REFERENCES accounts,
    username   text NOT NULL,
    action     text NOT NULL,
    site_id    text,
    state      char(2),
    target     text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX changes_by_time ON changes (at DESC);

-- The audit of who looked at which referrals (a board shows no patient data, but a
-- referral's existence, urgency and location are still the hospital's facts).
CREATE TABLE referral_views (
    view_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    account_id   uuid NOT NULL REFERENCES accounts,
    username     text NOT NULL,
    site_id      text NOT NULL,
    referral_ids uuid[] NOT NULL
);
CREATE INDEX referral_views_by_time ON referral_views (at DESC);
