"""Handoff's event contract: the envelope, every event payload, and the topic map.

Every service imports its events from here, so a change to the contract is one
change in one place, checked against the committed JSON Schema files.
"""

from handoff_schemas.catalog import EVENT_TYPES, event_class_for
from handoff_schemas.envelope import Envelope, EventPayload, Payload
from handoff_schemas.topics import Topic, dead_letter_topic, partition_key

__all__ = [
    "EVENT_TYPES",
    "Envelope",
    "EventPayload",
    "Payload",
    "Topic",
    "dead_letter_topic",
    "event_class_for",
    "partition_key",
]
