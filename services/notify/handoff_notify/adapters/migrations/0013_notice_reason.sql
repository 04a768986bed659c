-- Why the referral went unassigned (ReferralUnassigned.reason and .nobody_reached), so that
-- a supervisor's notice says "nobody is on call for it" when no coach was on call to ask,
-- and "no page got through" when every page of the last round failed to reach its coach,
-- rather than "nobody on call accepted it". Notices queued before these columns read as
-- before (reason NULL, nobody_reached false).
ALTER TABLE notify.notices
    ADD COLUMN reason text,
    ADD COLUMN nobody_reached boolean NOT NULL DEFAULT false;
