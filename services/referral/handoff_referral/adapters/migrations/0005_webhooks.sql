-- Signed status webhooks to the hospital (decision 0022).

-- A site's callback: where its referrals' timeline steps are POSTed, and the secret that
-- signs them (Standard Webhooks, `whsec_…`). The secret has to be kept as it is to sign;
-- it is shown once, when made. After a rotation the previous secret also signs for a
-- grace period, so the hospital can switch without refusing a delivery.
CREATE TABLE webhook_endpoints (
    site_id                  text PRIMARY KEY REFERENCES sites,
    url                      text NOT NULL,
    secret                   text NOT NULL,
    previous_secret          text,
    previous_secret_until    timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- One row per timeline step to tell the site, written in the transaction that records the
-- step (an outbox), so a crash loses none. seq orders a referral's steps: only the oldest
-- pending delivery of a referral is sent, so step n+1 never overtakes step n.
-- No PHI: the body is made from these columns and the referral's external id.
CREATE TABLE webhook_deliveries (
    delivery_id     uuid PRIMARY KEY,
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    site_id         text NOT NULL REFERENCES sites,
    referral_id     uuid NOT NULL REFERENCES referrals,
    step            text NOT NULL,
    status          text NOT NULL,
    at              timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The retry window runs from here: the step's creation, or the replay that reset it.
    due_since       timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    last_attempt_at timestamptz,
    last_error      text,
    finished_at     timestamptz
);
CREATE INDEX webhook_deliveries_line ON webhook_deliveries (referral_id, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (site_id, due_since)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_site ON webhook_deliveries (site_id, created_at);
CREATE INDEX webhook_deliveries_by_referral ON webhook_deliveries (referral_id, seq);
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (site_id, finished_at)
    WHERE state = 'failed';
