-- Whether every page of the last round failed to reach its coach
-- (ReferralUnassigned.nobody_reached), so that a supervisor's notice says "no page got
-- through to a coach" (a paging problem) rather than "nobody on call accepted it". False on
-- notices queued before this column: they read as before.
ALTER TABLE notify.notices ADD COLUMN nobody_reached boolean NOT NULL DEFAULT false;
