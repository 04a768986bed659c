-- Texts give the site's wall-clock time (decision 0020): the zone comes on OfferMade and
-- ReferralUnassigned. Rows from before carry none and are shown in UTC.
ALTER TABLE notify.offers ADD COLUMN site_time_zone text;

-- A supervisor's notice names the referral's urgency and local time. Past the quarter
-- hour's limit, held notices leave together in one digest: `digest_of` is the notice
-- whose send carried them, `sent_at` when a send left (the limit counts sends, not rows).
ALTER TABLE notify.notices
    ADD COLUMN urgency text,
    ADD COLUMN site_time_zone text,
    ADD COLUMN sent_at timestamptz,
    ADD COLUMN digest_of uuid;
CREATE INDEX notices_recent_sends ON notify.notices (channel, destination, sent_at)
    WHERE sent_at IS NOT NULL;
