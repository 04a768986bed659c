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
