-- When the referral service stated a site's facts (SiteRegistered's registered_at, or a
-- referral's received_at), so that an older statement heard later never replaces a newer
-- one: a referral received before `site update` and consumed after its SiteRegistered
-- (another topic) put the old short name back (found testing `site update`). NULL: facts
-- kept before this column, replaced by any dated statement.
ALTER TABLE site_facts ADD COLUMN facts_at timestamptz;
