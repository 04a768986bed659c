-- The W3C trace context of the transaction that wrote each event, for the relay to send
-- on as the Kafka message's traceparent header (see tracing.py). Null when tracing is off.
ALTER TABLE outbox ADD COLUMN trace_context text;
