"""Minimum necessary: the rules that keep PHI out of events, checked when a model is defined.

An event model that declares a field named like patient identity, or a string
field with no bound on what it may hold (free text), is refused at import time,
so the mistake never reaches a broker.
"""

import re
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo

# Names of fields that would carry a patient's identity or narrative.
FORBIDDEN_FIELD_NAMES = frozenset(
    {
        "name",
        "first_name",
        "last_name",
        "patient_name",
        "full_name",
        "initials",
        "mrn",
        "medical_record_number",
        "dob",
        "date_of_birth",
        "birth_date",
        "birthdate",
        "notes",
        "note",
        "comment",
        "comments",
        "free_text",
        "description",
        "ssn",
        "address",
    }
)

# A bounded string is an identifier, a code or a short label, not free text.
MAX_BOUNDED_STRING = 64


class PHIFieldError(TypeError):
    """An event model declares a field that could carry PHI."""


def check_event_model(model_name: str, fields: dict[str, FieldInfo]) -> None:
    for field_name, info in fields.items():
        if field_name.lower() in FORBIDDEN_FIELD_NAMES:
            raise PHIFieldError(
                f"{model_name}.{field_name}: events never carry patient names, initials, "
                "MRN, date of birth or free-text notes (DESIGN.md, minimum necessary)"
            )
        if _admits_free_text(info):
            raise PHIFieldError(
                f"{model_name}.{field_name}: a string field in an event needs a pattern or a "
                f"max_length of at most {MAX_BOUNDED_STRING}, so it cannot carry free text"
            )


def _admits_free_text(info: FieldInfo) -> bool:
    return _admits_free_text_in(info.annotation, list(info.metadata))


def _admits_free_text_in(annotation: Any, metadata: list[Any]) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return _admits_free_text_in(inner, [*metadata, *extra])
    if annotation is str:
        return not _is_bounded(metadata)
    if origin is None or origin is Literal:
        return False
    return any(_admits_free_text_in(arg, []) for arg in get_args(annotation))


def _is_bounded(metadata: list[Any]) -> bool:
    for item in metadata:
        if isinstance(item, FieldInfo) and _is_bounded(list(item.metadata)):
            return True
        pattern = getattr(item, "pattern", None)
        if pattern is not None and re.fullmatch(r"\^.*\$", str(pattern)):
            return True
        max_length = getattr(item, "max_length", None)
        if max_length is not None and int(max_length) <= MAX_BOUNDED_STRING:
            return True
    return False
