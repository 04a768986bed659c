-- Durable timers (offer expiry, arrival deadlines, fallbacks): rows, so they survive
-- restarts, claimed with SKIP LOCKED, so each fires once across replicas.
CREATE TABLE timers (
    timer_id   uuid PRIMARY KEY,
    kind       text NOT NULL,
    due_at     timestamptz NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}',
    attempts   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX timers_by_due ON timers (due_at);
