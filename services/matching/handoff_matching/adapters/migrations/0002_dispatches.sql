-- A site's dispatch settings: matching's own facts about a site id.
CREATE TABLE site_settings (
    site_id                text PRIMARY KEY,
    mode                   text NOT NULL DEFAULT 'sequential'
                               CHECK (mode IN ('sequential', 'broadcast')),
    ack_timeout_seconds    integer NOT NULL DEFAULT 300 CHECK (ack_timeout_seconds > 0),
    arrival_target_seconds integer NOT NULL DEFAULT 3600 CHECK (arrival_target_seconds > 0),
    broadcast_size         integer NOT NULL DEFAULT 3 CHECK (broadcast_size > 0),
    interpreter_available  boolean NOT NULL DEFAULT true,
    supervisors            uuid[] NOT NULL DEFAULT '{}'
);

-- One referral's way up the ladder (domain/dispatch.py), loaded and saved whole under
-- its row lock; the columns beside the document are what queries need.
CREATE TABLE dispatches (
    referral_id    uuid PRIMARY KEY,
    state          text NOT NULL,
    assigned_coach uuid,
    document       jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dispatches_holding_a_coach ON dispatches (assigned_coach) WHERE state = 'assigned';
