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

-- One wake-up per inserting statement; the relay LISTENs and also polls as a fallback.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('handoff_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_inserted AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Idempotent consumer: an event id recorded here was processed, in the same transaction.
CREATE TABLE processed_events (
    consumer_group text NOT NULL,
    event_id       uuid NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
