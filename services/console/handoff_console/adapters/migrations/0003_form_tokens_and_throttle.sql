-- Forms carry a one-time token (a nonce signed with the session's CSRF token); a nonce is
-- stored here when its form is saved, so the same form sent twice (a double click, the
-- back button) saves once. Only the nonce's SHA-256 is kept.
CREATE TABLE used_form_tokens (
    nonce_hash bytea PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES accounts ON DELETE CASCADE,
    used_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX used_form_tokens_by_time ON used_form_tokens (used_at);

-- Failed sign-ins by (case-folded) username, for throttling guessers; cleared on success.
CREATE TABLE sign_in_failures (
    username_key text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_failures_by_name ON sign_in_failures (username_key, at);
