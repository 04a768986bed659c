"""The event contract as an AsyncAPI 3.0 document, built from the catalog and the topics.

One channel per topic, one message per event type (its payload is the committed JSON
Schema file of its envelope, by reference), and the operations each service performs:
which topics it sends to and which it receives from, the same list its Kafka user's ACLs
grant (deploy/k8s/base/kafka/users.yaml). `handoff schemas generate` writes it to
schemas/asyncapi.yaml; `handoff schemas check` fails when the file has drifted.
"""

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handoff_schemas.catalog import EVENT_TYPES, events_on
from handoff_schemas.envelope import Payload
from handoff_schemas.schema_files import SCHEMA_DIR, schema_file_name
from handoff_schemas.topics import Topic

ASYNCAPI_FILE = SCHEMA_DIR.parent / "asyncapi.yaml"
ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
PAYLOAD_FORMAT = "application/schema+json;version=draft-07"


@dataclass(frozen=True)
class ServiceTopics:
    """The topics a service publishes to (its outbox) and consumes from (its group)."""

    sends: tuple[Topic, ...]
    receives: tuple[Topic, ...]


SERVICE_TOPICS: Mapping[str, ServiceTopics] = {
    "referral": ServiceTopics(
        sends=(Topic.REFERRALS, Topic.SITES), receives=(Topic.DISPATCH, Topic.PAGES)
    ),
    "matching": ServiceTopics(
        sends=(Topic.DISPATCH,), receives=(Topic.SITES, Topic.REFERRALS, Topic.PAGES)
    ),
    "notify": ServiceTopics(sends=(Topic.PAGES,), receives=(Topic.DISPATCH, Topic.REFERRALS)),
    "reports": ServiceTopics(sends=(), receives=(Topic.REFERRALS, Topic.DISPATCH, Topic.PAGES)),
}


def channel_id(topic: Topic) -> str:
    """`handoff.referrals` → `referrals`."""
    return topic.value.removeprefix("handoff.")


def _summary(payload_class: type[Payload]) -> str:
    return (inspect.getdoc(payload_class) or payload_class.__name__).split("\n\n")[0]


def _message(payload_class: type[Payload], schema_dir: Path) -> dict[str, Any]:
    relative = f"{schema_dir.name}/{schema_file_name(payload_class)}"
    return {
        "name": payload_class.event_type,
        "title": payload_class.__name__,
        "summary": " ".join(_summary(payload_class).split()),
        "contentType": "application/json",
        "payload": {"schemaFormat": PAYLOAD_FORMAT, "schema": {"$ref": relative}},
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "format": "uuid",
                    "description": "The envelope's subject: the referral id (a site's on "
                    "handoff.sites), so one referral's events stay in order.",
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def document(version: str, schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The AsyncAPI document as plain data (ready for a YAML or JSON dump); `version` is
    the contract's release, e.g. the package's."""
    channels = {
        channel_id(topic): {
            "address": topic.value,
            "messages": {
                cls.__name__: {"$ref": f"#/components/messages/{cls.__name__}"}
                for cls in events_on(topic)
            },
            "bindings": {"kafka": {"topic": topic.value, "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        for topic in Topic
    }
    operations: dict[str, Any] = {}
    for service, topics in SERVICE_TOPICS.items():
        for action, listed in (("send", topics.sends), ("receive", topics.receives)):
            for topic in listed:
                name = f"{service}_{action}s_{channel_id(topic)}"
                operations[name] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel_id(topic)}"},
                    "summary": f"The {service} service {action}s {topic.value}.",
                }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Handoff events",
            "version": version,
            "description": "The events Handoff's services exchange over Kafka. Every message "
            "is a CloudEvents envelope (JSON) whose `data` is the payload; the JSON Schema "
            "of each envelope is committed under schemas/jsonschema.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kubernetes": {
                "host": "handoff-kafka-kafka-bootstrap:9093",
                "protocol": "kafka-secure",
                "description": "The Strimzi cluster of deploy/k8s: TLS, SCRAM-SHA-512 logins.",
                "security": [{"$ref": "#/components/securitySchemes/scram"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {
                cls.__name__: _message(cls, schema_dir)
                for cls in sorted(EVENT_TYPES.values(), key=lambda c: c.__name__)
            },
            "securitySchemes": {
                "scram": {
                    "type": "scramSha512",
                    "description": "One Kafka user per service (KAFKA_SASL_USERNAME).",
                }
            },
        },
    }
