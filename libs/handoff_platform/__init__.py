"""Machinery every Handoff service shares, written once.

Settings, JSON logs with the correlation id, PostgreSQL pools and migrations,
the Kafka broker and topics, the transactional outbox and its relay, the
idempotent consumer with dead-lettering, metrics and health endpoints.
"""
