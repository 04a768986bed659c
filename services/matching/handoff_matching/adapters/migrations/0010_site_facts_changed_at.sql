-- A site's facts are written when they first arrive or change, not on every referral
-- (every referral of a site rewriting one row serialised them all on its row lock:
-- issue 17), so the time kept is when they last changed.
ALTER TABLE site_facts RENAME COLUMN seen_at TO changed_at;
