"""Prometheus metrics of the shared machinery. Labels hold codes and ids, never patient data."""

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_PENDING = Gauge(
    "handoff_outbox_pending_events", "Events committed to the outbox and not yet on Kafka."
)
OUTBOX_OLDEST_AGE = Gauge(
    "handoff_outbox_oldest_pending_seconds", "Age of the oldest event still in the outbox."
)
OUTBOX_PUBLISHED = Counter(
    "handoff_outbox_published_events_total", "Events the relay handed to Kafka.", ["topic"]
)
OUTBOX_BATCHES = Counter(
    "handoff_outbox_batches_total",
    "Batches the relay read from the outbox and handed to Kafka: a SELECT, the batch's "
    "produce requests and a DELETE each.",
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "handoff_outbox_publish_failures_total",
    "Relay batches Kafka refused, or had not acknowledged within the relay's ack timeout.",
)
OUTBOX_IS_LEADER = Gauge(
    "handoff_outbox_relay_leader", "1 on the replica whose relay currently publishes."
)
EVENTS_CONSUMED = Counter(
    "handoff_events_consumed_total",
    "Events taken from Kafka, by outcome: processed, duplicate, ignored or dead_lettered.",
    ["group", "event_type", "outcome"],
)
EVENT_HANDLING_SECONDS = Histogram(
    "handoff_event_handling_seconds",
    "Time to handle one event, database transaction included.",
    ["group"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
CONSUMER_RETRIES = Counter(
    "handoff_consumer_retries_total", "Transient failures retried with backoff.", ["group"]
)
DEAD_LETTERS = Counter(
    "handoff_dead_letters_total", "Messages sent to a dead-letter topic.", ["group", "reason"]
)
CONSUMER_LAG = Gauge(
    "handoff_consumer_lag_messages",
    "End offset minus committed offset, per consumer group and partition.",
    ["group", "topic", "partition"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "handoff_http_request_duration_seconds",
    "HTTP request latency by route template and status code.",
    ["method", "route", "status"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TIMERS_FIRED = Counter("handoff_timers_fired_total", "Durable timers fired.", ["kind"])
TIMER_FAILURES = Counter(
    "handoff_timer_failures_total", "Timer handlers that failed and were rescheduled."
)
TIMERS_DEFERRED = Counter(
    "handoff_timers_deferred_total",
    "Timer firings put off a moment because the row their handler acts on was held.",
)
TIMER_LATENESS_SECONDS = Histogram(
    "handoff_timer_lateness_seconds",
    "How long after its due time a timer fired.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TIMERS_OVERDUE_SECONDS = Gauge(
    "handoff_timers_overdue_seconds", "How far past due the oldest unfired timer is."
)
READY = Gauge(
    "handoff_ready",
    "1 while the readiness check passes (as /readyz answers), by check; measured at each scrape.",
    ["check"],
)
LOOP_RESTARTS = Counter(
    "handoff_loop_restarts_total",
    "Supervised background loops restarted after an error, by loop and error class.",
    ["loop", "error"],
)
LOOP_LAST_CYCLE_AGE = Gauge(
    "handoff_loop_last_cycle_age_seconds",
    "Seconds since a supervised background loop last completed a cycle; measured at scrape.",
    ["loop"],
)
LOOP_EXPECTED_INTERVAL = Gauge(
    "handoff_loop_expected_interval_seconds",
    "The longest a healthy supervised loop goes between two completed cycles.",
    ["loop"],
)
