-- Referrals the ED cancelled, as notify heard it (ReferralCancelled). Matching may assign
-- a coach whose "yes" it read before the cancel: notify then tells that coach the request
-- was cancelled instead of confirming it, whichever of the two events it reads first.
CREATE TABLE notify.cancelled_referrals (
    referral_id  uuid PRIMARY KEY,
    cancelled_at timestamptz NOT NULL
);
