-- The ED's changes to each referral (ReferralUpdated), merged, newest field last: an offer
-- notify hears of after a change (matching made it from the older facts, or the change
-- reached notify first) shows the change on its page all the same.
CREATE TABLE notify.referral_updates (
    referral_id uuid PRIMARY KEY,
    changes     jsonb NOT NULL,
    updated_at  timestamptz NOT NULL
);
