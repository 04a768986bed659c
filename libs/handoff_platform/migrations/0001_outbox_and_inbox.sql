-- Applied into each service's own schema (search_path is set to it).

-- Transactional outbox: a service's state change and the events it emits commit together.
CREATE TABLE outbox (
    position      bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    topic         text NOT NULL,
    partition_key bytea NOT NULL,
    event_type    text NOT NULL,
    correlation_id text NOT NULL,
    body          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- No NOTIFY trigger here, on purpose: a transaction that notifies holds a database-wide
-- lock through its commit's fsync, which serialises every writer (see outbox.py).

-- Idempotent consumer: an event id recorded here was processed, in the same transaction.
CREATE TABLE processed_events (
    consumer_group text NOT NULL,
    event_id       uuid NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
