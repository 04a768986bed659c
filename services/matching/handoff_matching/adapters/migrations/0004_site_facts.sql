-- A read-only projection of sites as the referral service describes them on each
-- ReferralCreated (the referral service owns them: docs/decisions/0004).
CREATE TABLE site_facts (
    site_id    text PRIMARY KEY,
    short_name text NOT NULL,
    state      char(2) NOT NULL,
    time_zone  text NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now()
);
