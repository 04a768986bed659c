"""The referral service: what hospital systems talk to.

domain/       pure rules: the intake request, the status timeline, API keys
adapters/     PostgreSQL (referrals, sites, keys, timeline) and its migrations
service.py    use cases, each one database transaction with its outbox events
entrypoints/  HTTP API, Kafka consumers, CLI
app.py        composition root: wires settings, pool, broker, relay and consumers
"""

SCHEMA = "referral"
SOURCE = "/handoff/referral"
CONSUMER_GROUP = "handoff-referral"
