-- The message time (MSH-7) of the HL7 ADT^A08 that last moved the referral: an older A08
-- arriving later (an engine resending from its queue) must not move the coach back to the
-- bed the patient left.
ALTER TABLE referral.referrals ADD COLUMN location_sent_at timestamptz;
