"""The notify service: pages coaches on their contact methods and takes their answers.

domain/       pure rules: message content, the per-message delivery state machine,
              throttles, an offer's life as the coach sees it, reply codes, link tokens
adapters/     PostgreSQL (offers, messages, responses) and the providers: Twilio-compatible
              SMS and voice, SMTP email, signed webhooks, and the sandbox
service.py    use cases: one transaction each, with outbox events and timers
delivery.py   the worker that claims due messages, hands them to providers, records outcomes
entrypoints/  Kafka consumers, the coach's page, Twilio webhooks, the sandbox inbox, CLI
app.py        composition root
"""

SCHEMA = "notify"
SOURCE = "/handoff/notify"
CONSUMER_GROUP = "handoff-notify"
CHANNEL_FALLBACK = "channel_fallback"
THROTTLE_ENDS = "throttle_ends"
