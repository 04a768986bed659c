"""The matching service: who is on call, who fits, and the escalation ladder.

domain/       pure rules with an explicit `now`: schedules, eligibility, ranking, the ladder
adapters/     PostgreSQL: roster, site settings, dispatches; migrations
service.py    use cases: one transaction each, with outbox events and timers
entrypoints/  Kafka consumers, CLI
app.py        composition root
"""

SCHEMA = "matching"
SOURCE = "/handoff/matching"
CONSUMER_GROUP = "handoff-matching"
