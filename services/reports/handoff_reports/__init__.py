"""The reports service: program reports for funders, from the events (issue #16).

domain/       pure figures: per site and month, percentiles, the small-cell rule, CSV rows
adapters/     PostgreSQL (schema `reports`): the de-identified read model; migrations
entrypoints/  Kafka consumers, the reports API, CLI
app.py        composition root
"""

SCHEMA = "reports"
SOURCE = "/handoff/reports"
CONSUMER_GROUP = "handoff-reports"
