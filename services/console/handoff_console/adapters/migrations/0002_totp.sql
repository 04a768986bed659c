-- An optional second factor: a TOTP secret (RFC 6238, base32) and the last time step used,
-- so a code seen once (over a shoulder, in a proxy log) does not sign in again.
ALTER TABLE accounts
    ADD COLUMN totp_secret    text,
    ADD COLUMN totp_last_step bigint;
