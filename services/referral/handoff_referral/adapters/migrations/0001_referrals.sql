CREATE TABLE sites (
    site_id    text PRIMARY KEY,
    name       text NOT NULL,
    short_name text NOT NULL,
    state      char(2) NOT NULL,
    time_zone  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Only a hash of each key's secret is kept; the key itself is shown once.
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    site_id       text NOT NULL REFERENCES sites,
    secret_sha256 bytea NOT NULL,
    label         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- PHI lives here and nowhere else: patient details and notes never leave this schema.
CREATE TABLE referrals (
    referral_id         uuid PRIMARY KEY,
    site_id             text NOT NULL REFERENCES sites,
    external_id         text NOT NULL,
    request_fingerprint bytea NOT NULL,
    status              text NOT NULL,
    urgency             text NOT NULL,
    location            text NOT NULL,
    callback_phone      text NOT NULL,
    patient             jsonb NOT NULL,
    notes               text,
    cancel_reason       text,
    correlation_id      text NOT NULL,
    received_at         timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    UNIQUE (site_id, external_id)
);
CREATE INDEX referrals_listing ON referrals (site_id, received_at, referral_id);
CREATE INDEX referrals_status_listing ON referrals (site_id, status, received_at, referral_id);

CREATE TABLE timeline (
    referral_id uuid NOT NULL REFERENCES referrals,
    status      text NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (referral_id, status)
);
