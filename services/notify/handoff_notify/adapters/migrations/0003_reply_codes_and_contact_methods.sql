-- An offer's first page must not leave after its page deadline (OfferMade.page_deadline).
ALTER TABLE notify.offers ADD COLUMN page_deadline timestamptz;

-- The code each offer SMS carries, per phone: unique among the phone's open offers and not
-- reused for 24 hours, so "1B" names one request. `shown` records whether the page's text
-- carried it, so a lost send's lookup renders the very same body.
CREATE TABLE notify.reply_codes (
    destination text NOT NULL,
    offer_id    uuid NOT NULL REFERENCES notify.offers,
    code        text NOT NULL,
    shown       boolean NOT NULL,
    assigned_at timestamptz NOT NULL,
    PRIMARY KEY (destination, offer_id)
);
CREATE INDEX reply_codes_recent ON notify.reply_codes (destination, assigned_at);

-- Contact methods no message may go to: opted out by a carrier keyword (STOP), or found
-- never deliverable by the provider. A method in good standing has no row.
CREATE TABLE notify.contact_methods (
    channel     text NOT NULL,
    destination text NOT NULL,
    state       text NOT NULL,  -- opted_out | unreachable
    reason      text NOT NULL,  -- stop_keyword | provider:<code>
    since       timestamptz NOT NULL,
    PRIMARY KEY (channel, destination)
);
CREATE INDEX contact_methods_state ON notify.contact_methods (state, since);

-- Messages that belong to no offer: a referral nobody took, told to the site's supervisors
-- once per ReferralUnassigned event and contact. Sent at most once: a send whose outcome
-- was lost is marked failed, never repeated.
CREATE TABLE notify.notices (
    notice_id        uuid PRIMARY KEY,
    event_id         uuid NOT NULL,
    contact_index    int NOT NULL,
    referral_id      uuid NOT NULL,
    correlation_id   text NOT NULL,
    site_short_name  text,
    unassigned_at    timestamptz NOT NULL,
    channel          text NOT NULL,
    destination      text NOT NULL,
    state            text NOT NULL,   -- pending | sending | sent | failed | cancelled
    attempts         int NOT NULL DEFAULT 0,
    due_at           timestamptz NOT NULL DEFAULT now(),
    sending_deadline timestamptz,
    provider_ref     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (event_id, contact_index)
);
CREATE INDEX notices_due ON notify.notices (due_at) WHERE state = 'pending';
CREATE INDEX notices_sending ON notify.notices (sending_deadline) WHERE state = 'sending';
