"""Events carry no patient identity or free text: enforced when a model is defined."""

from typing import Annotated, ClassVar

import pytest
from pydantic import Field

from handoff_schemas import EVENT_TYPES, EventPayload, Topic
from handoff_schemas.privacy import FORBIDDEN_FIELD_NAMES, PHIFieldError
from handoff_schemas.schema_files import generate
from handoff_schemas.vocabulary import ShortLabel


@pytest.mark.parametrize("field_name", ["patient_name", "initials", "mrn", "dob", "notes"])
def test_a_phi_named_field_is_refused(field_name: str) -> None:
    with pytest.raises(PHIFieldError, match=field_name):
        type(
            "Leaky",
            (EventPayload,),
            {"__annotations__": {field_name: ShortLabel}, "event_type": "x", "topic": Topic.PAGES},
        )


def test_an_unbounded_string_is_refused_as_free_text() -> None:
    with pytest.raises(PHIFieldError, match="free text"):

        class Chatty(EventPayload):
            event_type: ClassVar[str] = "org.handoff.test.chatty"
            topic: ClassVar[Topic] = Topic.PAGES
            summary: str


def test_a_long_or_nested_free_text_field_is_refused() -> None:
    with pytest.raises(PHIFieldError, match="history"):

        class Verbose(EventPayload):
            event_type: ClassVar[str] = "org.handoff.test.verbose"
            topic: ClassVar[Topic] = Topic.PAGES
            history: list[Annotated[str, Field(max_length=1000)]]


def test_bounded_codes_and_labels_are_allowed() -> None:
    class Fine(EventPayload):
        event_type: ClassVar[str] = "org.handoff.test.fine"
        topic: ClassVar[Topic] = Topic.PAGES
        label: ShortLabel | None = None
        code: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]

    assert set(Fine.model_fields) == {"referral_id", "label", "code"}


def _property_names(schema: object) -> set[str]:
    if isinstance(schema, dict):
        names = set(schema.get("properties", {}))
        return names.union(*(_property_names(value) for value in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_property_names(item) for item in schema))
    return set()


def test_no_event_in_the_catalog_has_a_phi_field_or_substances_beyond_referral_created() -> None:
    for payload_class in EVENT_TYPES.values():
        names = _property_names(generate(payload_class))
        assert not names & FORBIDDEN_FIELD_NAMES, payload_class.event_type
        if payload_class.event_type != "org.handoff.referral.created":
            assert "substances" not in names, payload_class.event_type
