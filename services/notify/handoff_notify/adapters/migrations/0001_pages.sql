-- What notify knows of each offer it paged: enough to render the coach's page and
-- to take answers. The briefing holds no patient identity (see OfferBriefing).
CREATE TABLE notify.offers (
    offer_id         uuid PRIMARY KEY,
    referral_id      uuid NOT NULL,
    coach_id         uuid NOT NULL,
    correlation_id   text NOT NULL,
    site_id          text NOT NULL,
    site_short_name  text NOT NULL,
    urgency          text NOT NULL,
    tier             text NOT NULL,
    briefing         jsonb NOT NULL,
    contacts         jsonb NOT NULL,  -- in order of preference
    offered_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    state            text NOT NULL,
    withdraw_reason  text,
    arrival_deadline timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per message to one contact method; the delivery state machine lives here.
CREATE TABLE notify.messages (
    message_id       uuid PRIMARY KEY,
    offer_id         uuid NOT NULL REFERENCES notify.offers,
    kind             text NOT NULL,   -- offer | withdrawn | assigned
    contact_index    int NOT NULL,
    channel          text NOT NULL,
    destination      text NOT NULL,
    state            text NOT NULL,
    attempts         int NOT NULL DEFAULT 0,
    due_at           timestamptz NOT NULL DEFAULT now(),
    sending_since    timestamptz,
    sending_deadline timestamptz,
    provider_ref     text,
    failure          text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    finished_at      timestamptz,
    UNIQUE (offer_id, kind, contact_index)
);
CREATE INDEX messages_due ON notify.messages (due_at) WHERE state = 'pending';
CREATE INDEX messages_sending ON notify.messages (sending_deadline) WHERE state = 'sending';
CREATE INDEX messages_to ON notify.messages (channel, destination, created_at);
CREATE UNIQUE INDEX messages_provider_ref ON notify.messages (provider_ref)
    WHERE provider_ref IS NOT NULL;

-- Each answer once: a second tap or a repeated SMS reply finds its row here.
CREATE TABLE notify.responses (
    offer_id     uuid NOT NULL REFERENCES notify.offers,
    response     text NOT NULL,
    via          text NOT NULL,
    responded_at timestamptz NOT NULL,
    PRIMARY KEY (offer_id, response)
);

-- The sandbox provider's phone: every message it "sent", for the local inbox page.
CREATE TABLE notify.sandbox_messages (
    sandbox_id   bigserial PRIMARY KEY,
    message_id   uuid NOT NULL UNIQUE,
    channel      text NOT NULL,
    destination  text NOT NULL,
    subject      text NOT NULL,
    body         text NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now()
);
