-- A provider's delivery report that arrived before notify stored the provider's id for
-- the message (the send's HTTP response still in flight, or not yet committed). It is
-- kept here and applied when the id is stored; a report whose id never turns up
-- (another application's message) is deleted after a while, so the table stays small.
CREATE TABLE notify.early_delivery_reports (
    provider_ref text PRIMARY KEY,
    delivered    boolean NOT NULL,
    error_code   text,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX early_delivery_reports_received ON notify.early_delivery_reports (received_at);
