-- A referral's offers (an ED's cancel or change reaches each) and a coach's open offers (OFF
-- passes each on, whichever method paged it) are found without reading every offer ever made.
CREATE INDEX offers_referral ON notify.offers (referral_id);
CREATE INDEX offers_open_by_coach ON notify.offers (coach_id) WHERE state = 'open';
