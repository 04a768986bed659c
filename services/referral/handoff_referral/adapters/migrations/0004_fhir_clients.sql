-- FHIR R4 with SMART Backend Services (decision 0016).

-- A hospital system that asks for access tokens with assertions signed by its private key.
-- Only public keys are kept: the JWKS itself, or the URL the site publishes it at.
CREATE TABLE fhir_clients (
    client_id  text PRIMARY KEY,
    site_id    text NOT NULL REFERENCES sites,
    label      text NOT NULL,
    jwks       jsonb,
    jwks_url   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK ((jwks IS NULL) <> (jwks_url IS NULL))
);
CREATE INDEX fhir_clients_by_site ON fhir_clients (site_id);

-- Each assertion's jti, kept until the assertion expires, so none is used twice.
CREATE TABLE fhir_assertions_used (
    client_id  text NOT NULL REFERENCES fhir_clients,
    jti        text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX fhir_assertions_used_expiry ON fhir_assertions_used (expires_at);

-- Access tokens are opaque and live five minutes; only a hash of each is kept.
CREATE TABLE fhir_access_tokens (
    token_sha256 bytea PRIMARY KEY,
    client_id    text NOT NULL REFERENCES fhir_clients,
    scopes       text[] NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX fhir_access_tokens_expiry ON fhir_access_tokens (expires_at);

-- A referral that came in as a ServiceRequest: the system of its identifier (the value is
-- the referral's external_id), and when the hospital posted the Task that follows it.
CREATE TABLE fhir_requests (
    referral_id       uuid PRIMARY KEY REFERENCES referrals,
    identifier_system text NOT NULL,
    task_posted_at    timestamptz
);
