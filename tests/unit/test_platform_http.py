"""Bodies whose meaning depends on the parser are refused (RFC 8259 section 4): the key
given twice, named."""

import pytest

from handoff_platform.http import duplicate_key


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"consent": "declined", "consent": "obtained"}', "consent"),
        (b'{"patient": {"a": 1, "a": 2}, "b": 3}', "a"),
        (b'[{"x": 1}, {"y": 1, "y": 2}]', "y"),
        (b'{"a": {"b": 1}, "a": {"b": 1}}', "a"),  # even when both say the same
    ],
)
def test_a_key_given_twice_in_one_object_is_named(body: bytes, key: str) -> None:
    assert duplicate_key(body) == key


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "b": {"a": 2}}',
        b"[1, 2]",
        b"not json",
        b"\xff\xfe",
        b"",
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_distinct_keys_or_no_json_at_all_name_nothing(body: bytes) -> None:
    assert duplicate_key(body) is None
