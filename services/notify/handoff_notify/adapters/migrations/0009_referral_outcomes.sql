-- How a referral's unassigned spell ended, as notify hears it: assigned (CoachAssigned)
-- or cancelled (ReferralCancelled). A supervisor's notice held back by the quarter-hour
-- limit, a retry or a restart is checked against it before it leaves (issue #12): a
-- request that found a coach or was cancelled after it went unassigned needs no cover.
CREATE TABLE notify.referral_outcomes (
    referral_id uuid PRIMARY KEY,
    outcome     text NOT NULL,  -- assigned | cancelled
    at          timestamptz NOT NULL
);

-- When the offer's first page reached a provider (PageSent.sent_at): matching's ack clock
-- runs from it, so the offer ends at paged_at + (expires_at - page_deadline), before the
-- expires_at notify was given. A channel fallback due after that, e.g. one overdue at a
-- restart before the offer's end is consumed, must not page (issue #12).
ALTER TABLE notify.offers ADD COLUMN paged_at timestamptz;
UPDATE notify.offers o SET paged_at = (
    SELECT min(m.sent_at) FROM notify.messages m
    WHERE m.offer_id = o.offer_id AND m.kind = 'offer' AND m.sent_at IS NOT NULL);
