-- The reports read model (issue #16): per referral and per follow-up task, the facts the
-- program reports count, kept from the events. De-identified: a site, a state, times, a
-- tier and outcome codes; never a phone, a location, a briefing or a substance.
-- Events of one referral arrive on three topics in no fixed order between topics, so every
-- column is filled by whichever event carries it; the first time of a kind wins (LEAST).
CREATE TABLE referral_facts (
    referral_id        uuid PRIMARY KEY,
    site_id            text,
    state              char(2),
    received_at        timestamptz,
    first_page_at      timestamptz,
    accepted_at        timestamptz,
    accepted_tier      text CHECK (accepted_tier IN ('site', 'state_pool', 'supervisor')),
    arrived_at         timestamptz,
    completed_at       timestamptz,
    unassigned_at      timestamptz,
    expired_at         timestamptz,
    cancelled_at       timestamptz,
    visit_recorded_at  timestamptz,
    visit_outcomes     text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX referral_facts_site ON referral_facts (state, site_id);

-- The tier each offer was made at: CoachAssigned names the offer, OfferMade its tier.
CREATE TABLE offer_tiers (
    offer_id    uuid PRIMARY KEY,
    referral_id uuid NOT NULL,
    tier        text NOT NULL
);

CREATE TABLE follow_up_facts (
    task_id          uuid PRIMARY KEY,
    referral_id      uuid NOT NULL,
    site_id          text NOT NULL,
    window_days      integer NOT NULL,
    due_at           timestamptz,
    attempted_at     timestamptz,
    reached_at       timestamptz,
    reached_outcomes text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX follow_up_facts_referral ON follow_up_facts (referral_id);
