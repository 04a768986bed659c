-- HL7 v2 senders: one row per interface (MSH-3 sending application, MSH-4 facility) of a
-- site, with its mapping (order codes, order-entry questions) as registered from the CLI.
CREATE TABLE hl7_interfaces (
    sending_application text NOT NULL,
    sending_facility    text NOT NULL,
    site_id             text NOT NULL REFERENCES sites,
    mapping             jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sending_application, sending_facility)
);

-- Messages acknowledged AA, by control id (MSH-10): a resent message is acknowledged again
-- and does nothing. Only a SHA-256 of the message is kept, never the message.
CREATE TABLE hl7_messages (
    sending_application text NOT NULL,
    sending_facility    text NOT NULL,
    control_id          text NOT NULL,
    message_sha256      bytea NOT NULL,
    message_type        text NOT NULL,
    referral_id         uuid REFERENCES referrals,
    received_at         timestamptz NOT NULL,
    PRIMARY KEY (sending_application, sending_facility, control_id)
);

-- Which visit a referral ordered over HL7 belongs to, so ADT messages about the visit
-- (A03, A08, A11) find it: a SHA-256 of the site and visit number, not the number.
CREATE TABLE hl7_orders (
    referral_id uuid PRIMARY KEY REFERENCES referrals,
    site_id     text NOT NULL,
    visit_key   bytea NOT NULL
);
CREATE INDEX hl7_orders_by_visit ON hl7_orders (site_id, visit_key);
