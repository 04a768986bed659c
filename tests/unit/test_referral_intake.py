"""The intake request, its fingerprint, and API keys."""

from typing import Any

import pytest
from pydantic import ValidationError

from handoff_referral.domain.api_keys import issue_key, parse_key, secret_matches
from handoff_referral.domain.intake import ReferralRequest


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": "ED-2026-0001",
        "urgency": "urgent",
        "location": "ED bay 4",
        "callback_phone": "+14105550100",
        "patient": {
            "preferred_language": "es-US",
            "interpreter_needed": True,
            "substances": ["opioids", "alcohol"],
            "consent": "obtained",
        },
    }
    return body | changes


def test_the_same_request_has_the_same_fingerprint_whatever_the_order() -> None:
    first = ReferralRequest.model_validate(_body())
    reordered = _body()
    reordered["patient"] = dict(reversed(list(reordered["patient"].items())))
    reordered["patient"]["substances"] = ["alcohol", "opioids"]
    assert ReferralRequest.model_validate(reordered).fingerprint() == first.fingerprint()


def test_a_different_request_has_a_different_fingerprint() -> None:
    first = ReferralRequest.model_validate(_body())
    other = ReferralRequest.model_validate(_body(urgency="emergent"))
    assert first.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"urgency": "whenever"}, "urgency"),
        ({"callback_phone": "410-555-0100"}, "callback_phone"),
        ({"location": ""}, "location"),
        ({"location": "x" * 41}, "location"),
        ({"notes": "x" * 1001}, "notes"),
        ({"surprise": 1}, "surprise"),
        ({"external_id": ""}, "external_id"),
    ],
)
def test_bad_fields_are_rejected_by_name(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ReferralRequest.model_validate(_body(**changes))
    assert [error["loc"][0] for error in caught.value.errors()] == [field]


def test_patient_fields_are_validated() -> None:
    body = _body()
    body["patient"] = {**body["patient"], "substances": ["fentanyl"], "initials": "ABCD"}
    with pytest.raises(ValidationError) as caught:
        ReferralRequest.model_validate(body)
    locations = {error["loc"][:2] for error in caught.value.errors()}
    assert locations == {("patient", "substances"), ("patient", "initials")}


def test_an_issued_key_parses_and_matches_only_its_own_secret() -> None:
    key = issue_key()
    parsed = parse_key(key.token)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == key.key_id
    assert secret_matches(secret, key.secret_sha256)
    assert not secret_matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"), key.secret_sha256)
    assert key.token not in repr(key.secret_sha256)


@pytest.mark.parametrize("token", ["", "hok_", "Bearer x", "hok_zzzzzzzzzzzz_" + "a" * 43])
def test_malformed_keys_do_not_parse(token: str) -> None:
    assert parse_key(token) is None


def test_interpreter_needed_is_true_or_false_not_a_word() -> None:
    """fresh33b: "yes", "false" and 0 were taken (as FHIR never did), "false" as false."""
    for loose in ("yes", "false", 0, 1):
        patient = _body()["patient"] | {"interpreter_needed": loose}
        with pytest.raises(ValidationError) as refused:
            ReferralRequest.model_validate(_body(patient=patient))
        assert refused.value.errors()[0]["loc"] == ("patient", "interpreter_needed")


def test_a_language_tag_in_another_case_is_the_same_language() -> None:
    """fresh33b: a replay with `EN` where the first said `en` was a 409 external_id_conflict."""
    first = ReferralRequest.model_validate(_body())
    shouted = _body()
    shouted["patient"] = shouted["patient"] | {"preferred_language": "ES-us"}
    replay = ReferralRequest.model_validate(shouted)
    assert replay.patient.preferred_language == "es-US"
    assert replay.fingerprint() == first.fingerprint()
    hant = _body()
    hant["patient"] = hant["patient"] | {"preferred_language": "ZH-HANT-tw"}
    assert ReferralRequest.model_validate(hant).patient.preferred_language == "zh-Hant-TW"


def test_a_location_with_a_direction_override_or_an_invisible_character_is_refused() -> None:
    """fresh33b: a right-to-left override was taken and shown on the coach's page, where
    "ED \\u202eB 4" reads as another bed."""
    for location in ("ED \u202eB 4", "ED\u200bbay 4", "ED\u2028bay 4"):
        with pytest.raises(ValidationError) as refused:
            ReferralRequest.model_validate(_body(location=location))
        assert refused.value.errors()[0]["loc"] == ("location",)
    assert ReferralRequest.model_validate(_body(location="Urgences lit 4 é")).location


@pytest.mark.parametrize("location", ["   ", "", "\t"])
def test_a_blank_location_is_refused_saying_so(location: str) -> None:
    """fresh34b: spaces only were refused with the pattern of control characters."""
    with pytest.raises(ValidationError) as refused:
        ReferralRequest.model_validate(_body(location=location))
    [error] = refused.value.errors()
    assert error["loc"] == ("location",)
    assert "empty or only spaces" in error["msg"]
