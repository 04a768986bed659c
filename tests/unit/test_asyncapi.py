"""schemas/asyncapi.yaml: a valid AsyncAPI 3.0 document, generated from the code, checked
for drift.

The AsyncAPI 3.0.0 JSON Schema in tests/data is `schemas/3.0.0-without-$id.json` of
asyncapi/spec-json-schemas at tag v6.11.1 (commit e609fc2341007395d75df5756fc6fccf662c2087).
"""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import Draft7Validator
from typer.testing import CliRunner

from handoff_cli import schemas as schemas_command
from handoff_schemas.asyncapi import ASYNCAPI_FILE, SERVICE_TOPICS, channel_id
from handoff_schemas.catalog import EVENT_TYPES
from handoff_schemas.topics import Topic

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI_SCHEMA = ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json"


def _committed() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ASYNCAPI_FILE.read_text())
    return loaded


def test_the_committed_document_is_valid_asyncapi_3() -> None:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(_committed()), key=lambda e: e.path)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_every_event_type_is_a_message_on_its_topic_with_its_committed_schema() -> None:
    doc = _committed()
    messages = doc["components"]["messages"]
    assert {m["name"] for m in messages.values()} == set(EVENT_TYPES)
    for event_type, payload_class in EVENT_TYPES.items():
        message = messages[payload_class.__name__]
        assert message["name"] == event_type
        schema_file = ASYNCAPI_FILE.parent / message["payload"]["schema"]["$ref"]
        assert schema_file.exists(), schema_file
        assert json.loads(schema_file.read_text())["$id"].startswith(
            f"urn:handoff:event:{event_type}"
        )
        channel = doc["channels"][channel_id(payload_class.topic)]
        assert channel["address"] == payload_class.topic.value
        assert payload_class.__name__ in channel["messages"]


def test_each_topic_has_one_sender_and_every_service_operation_is_listed() -> None:
    operations = _committed()["operations"]
    for topic in Topic:
        senders = [s for s, topics in SERVICE_TOPICS.items() if topic in topics.sends]
        assert len(senders) == 1, topic
    listed = {(op["action"], op["channel"]["$ref"].rsplit("/", 1)[1]) for op in operations.values()}
    for topics in SERVICE_TOPICS.values():
        for topic in topics.sends:
            assert ("send", channel_id(topic)) in listed
        for topic in topics.receives:
            assert ("receive", channel_id(topic)) in listed


@pytest.mark.parametrize("stale", ["", "asyncapi: 3.0.0\ninfo: {title: old, version: '0'}\n"])
def test_schemas_check_fails_when_the_document_has_drifted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stale: str
) -> None:
    copy = tmp_path / "asyncapi.yaml"
    if stale:
        copy.write_text(stale)
    monkeypatch.setattr(schemas_command, "ASYNCAPI_FILE", copy)

    failed = CliRunner().invoke(schemas_command.app, ["check"])
    assert failed.exit_code == 1
    assert "asyncapi.yaml: not regenerated" in failed.output

    copy.write_text(ASYNCAPI_FILE.read_text())
    passed = CliRunner().invoke(schemas_command.app, ["check"])
    assert passed.exit_code == 0, passed.output
