-- How a referral's unassigned spell ended, as notify hears it: assigned (CoachAssigned)
-- or cancelled (ReferralCancelled). A supervisor's notice held back by the quarter-hour
-- limit, a retry or a restart is checked against it before it leaves (issue #12): a
-- request that found a coach or was cancelled after it went unassigned needs no cover.
CREATE TABLE notify.referral_outcomes (
    referral_id uuid PRIMARY KEY,
    outcome     text NOT NULL,  -- assigned | cancelled
    at          timestamptz NOT NULL
);
