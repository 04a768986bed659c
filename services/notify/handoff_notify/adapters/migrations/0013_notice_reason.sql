-- Why the referral went unassigned (ReferralUnassigned.reason), so that a supervisor's
-- notice says "nobody is on call for it" when no coach was on call to ask, rather than
-- "nobody on call accepted it". NULL on notices queued before this column: they read as
-- before.
ALTER TABLE notify.notices ADD COLUMN reason text;
