-- Accounts managed from the CLI (issue #15): usernames are case-insensitive, the last
-- sign-in is kept for `users list`, and an account can be removed while the change log and
-- the audit of referral views keep the name it had (they carry `username` themselves).

-- Usernames are stored lower-cased. Two existing accounts that differ only by case (`dana`
-- and `Dana`) cannot both keep the name: the older keeps it, each later one becomes
-- `<name>-2`, `<name>-3`, … (`handoff console users list` shows them), so no row is lost.
-- Two steps, as the unique index is checked row by row: the older `Dana` may not become
-- `dana` while the newer `dana` still holds it.
CREATE TEMPORARY TABLE renamed ON COMMIT DROP AS
SELECT account_id, CASE WHEN n = 1 THEN key ELSE key || '-' || n END AS username
FROM (
    SELECT account_id, username AS was, lower(username) AS key,
           row_number() OVER (PARTITION BY lower(username) ORDER BY created_at, account_id) AS n
    FROM accounts
) ranked
WHERE was <> CASE WHEN n = 1 THEN key ELSE key || '-' || n END;
UPDATE accounts a SET username = 'renaming:' || a.account_id
FROM renamed r WHERE a.account_id = r.account_id;
UPDATE accounts a SET username = r.username
FROM renamed r WHERE a.account_id = r.account_id;
ALTER TABLE accounts ADD CONSTRAINT accounts_username_lower_case
    CHECK (username = lower(username));

ALTER TABLE accounts ADD COLUMN last_sign_in_at timestamptz;

-- A change made from the CLI has no account behind it (the operator's $USER is the
-- `username`), and a removed account's changes and views stay, with their username.
ALTER TABLE changes ALTER COLUMN account_id DROP NOT NULL;
ALTER TABLE changes DROP CONSTRAINT changes_account_id_fkey,
    ADD CONSTRAINT changes_account_id_fkey
        FOREIGN KEY (account_id) REFERENCES accounts ON DELETE SET NULL;
ALTER TABLE referral_views ALTER COLUMN account_id DROP NOT NULL;
ALTER TABLE referral_views DROP CONSTRAINT referral_views_account_id_fkey,
    ADD CONSTRAINT referral_views_account_id_fkey
        FOREIGN KEY (account_id) REFERENCES accounts ON DELETE SET NULL;
