"""The committed JSON Schema files: generating them, and checking a change against them.

One file per event type and schema version: `<type>.v<version>.json`. A published
version is frozen: a compatible change (a new optional field, a wider type)
rewrites its file; a breaking one must bump the payload's `schema_version`,
which starts a new file and leaves the old one for consumers still reading it.
"""

import json
from pathlib import Path
from typing import Any

from handoff_schemas.catalog import EVENT_TYPES
from handoff_schemas.compatibility import breaking_changes
from handoff_schemas.envelope import Envelope, Payload

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "jsonschema"

JsonSchema = dict[str, Any]


def schema_file_name(payload_class: type[Payload]) -> str:
    return f"{payload_class.event_type}.v{payload_class.schema_version}.json"


def generate(payload_class: type[Payload]) -> JsonSchema:
    schema = Envelope[payload_class].model_json_schema()  # type: ignore[valid-type]
    schema["$id"] = f"urn:handoff:event:{payload_class.event_type}:v{payload_class.schema_version}"
    return schema


def render(schema: JsonSchema) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def committed(payload_class: type[Payload], schema_dir: Path = SCHEMA_DIR) -> JsonSchema | None:
    path = schema_dir / schema_file_name(payload_class)
    if not path.exists():
        return None
    loaded: JsonSchema = json.loads(path.read_text())
    return loaded


class IncompatibleChange(Exception):
    """A model change would break consumers of an already committed schema version."""


def write_all(schema_dir: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate every schema file; refuses to overwrite a version with a breaking change."""
    problems: list[str] = []
    for payload_class in EVENT_TYPES.values():
        old = committed(payload_class, schema_dir)
        if old is not None:
            problems += [
                f"{payload_class.event_type} v{payload_class.schema_version}: {change}"
                for change in breaking_changes(old, generate(payload_class))
            ]
    if problems:
        raise IncompatibleChange(
            "breaking changes to committed schema versions (bump schema_version instead):\n  "
            + "\n  ".join(problems)
        )
    schema_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for payload_class in EVENT_TYPES.values():
        path = schema_dir / schema_file_name(payload_class)
        path.write_text(render(generate(payload_class)))
        written.append(path)
    return written
