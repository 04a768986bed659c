"""The compatibility rules on small schemas: what breaks readers of old messages, what doesn't."""

from typing import Any

from handoff_schemas.compatibility import breaking_changes


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


OLD = _object(
    {
        "id": {"type": "string", "format": "uuid"},
        "urgency": {"$ref": "#/$defs/Urgency"},
        "label": {"type": "string", "maxLength": 40},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}},
        "maybe": {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}]},
    },
    ["id", "urgency"],
) | {"$defs": {"Urgency": {"enum": ["routine", "urgent"], "type": "string"}}}


def _with(**changes: Any) -> dict[str, Any]:
    new: dict[str, Any] = {**OLD, "properties": {**OLD["properties"]}}
    for key, value in changes.items():
        if key == "required":
            new["required"] = value
        elif key == "defs":
            new["$defs"] = value
        elif value is None:
            del new["properties"][key]
        else:
            new["properties"][key] = value
    return new


def test_identical_schemas_are_compatible() -> None:
    assert breaking_changes(OLD, OLD) == []


def test_an_added_optional_field_and_wider_types_are_compatible() -> None:
    new = _with(
        extra={"type": "boolean"},
        label={"type": "string", "maxLength": 80},
        count={"type": "number"},
        defs={"Urgency": {"enum": ["routine", "urgent", "emergent"], "type": "string"}},
    )
    assert breaking_changes(OLD, new) == []


def test_a_removed_field_breaks() -> None:
    assert breaking_changes(OLD, _with(label=None)) == ["$.label: field removed"]


def test_a_new_required_field_breaks() -> None:
    new = _with(extra={"type": "boolean"}, required=["id", "urgency", "extra"])
    assert breaking_changes(OLD, new) == ["$.extra: field is now required"]


def test_an_optional_field_made_required_breaks() -> None:
    assert breaking_changes(OLD, _with(required=["id", "urgency", "label"])) == [
        "$.label: field is now required"
    ]


def test_narrowed_types_break() -> None:
    assert breaking_changes(OLD, _with(count={"type": "string"})) == [
        "$.count: type narrowed, no longer accepts integer"
    ]
    assert breaking_changes(OLD, _with(label={"type": "string", "maxLength": 20})) == [
        "$.label: maxLength tightened to 20"
    ]
    assert breaking_changes(OLD, _with(maybe={"type": "string", "maxLength": 10})) == [
        "$.maybe: type narrowed, no longer accepts null"
    ]
    assert breaking_changes(
        OLD, _with(tags={"type": "array", "items": {"type": "string", "maxLength": 5}})
    ) == ["$.tags[]: maxLength tightened to 5"]
    assert breaking_changes(
        OLD, _with(defs={"Urgency": {"enum": ["urgent"], "type": "string"}})
    ) == ["$.urgency: enum values removed ['routine']"]
    assert breaking_changes(
        OLD, _with(label={"type": "string", "maxLength": 40, "pattern": "^[a-z]+$"})
    ) == ["$.label: pattern changed to '^[a-z]+$'"]
