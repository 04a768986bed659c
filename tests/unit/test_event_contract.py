"""The event contract: envelope rules, committed JSON Schema files, and compatibility."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError, create_model

from handoff_schemas import (
    EVENT_TYPES,
    Envelope,
    EventPayload,
    Payload,
    Topic,
    dead_letter_topic,
    partition_key,
)
from handoff_schemas.catalog import decode_event
from handoff_schemas.compatibility import breaking_changes
from handoff_schemas.envelope import site_subject
from handoff_schemas.events import ReferralCancelled, SiteFacts, SiteRegistered
from handoff_schemas.schema_files import committed, generate
from handoff_schemas.vocabulary import CancelReason


def _cancelled(at: datetime | None = None) -> ReferralCancelled:
    return ReferralCancelled(
        referral_id=uuid.uuid4(),
        reason=CancelReason.PATIENT_LEFT,
        cancelled_at=at or datetime.now(UTC),
    )


def test_envelope_carries_cloudevents_context_and_round_trips() -> None:
    payload = _cancelled()
    cause = uuid.uuid4()
    envelope = Envelope.wrap(
        payload, source="/handoff/referral", correlation_id="corr-1", causation_id=cause
    )
    wire = envelope.model_dump(mode="json")
    assert wire["specversion"] == "1.0"
    assert wire["type"] == "org.handoff.referral.cancelled"
    assert wire["subject"] == str(payload.referral_id)
    assert wire["schemaversion"] == 1
    assert wire["correlationid"] == "corr-1"
    assert wire["causationid"] == str(cause)
    assert wire["time"].endswith("Z")
    assert decode_event(envelope.model_dump_json()) == envelope


def test_times_are_normalised_to_utc_and_naive_times_refused() -> None:
    eastern = timezone(timedelta(hours=-5))
    payload = _cancelled(datetime(2026, 11, 1, 1, 30, tzinfo=eastern))
    assert payload.cancelled_at == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert payload.cancelled_at.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError, match="timezone"):
        ReferralCancelled(
            referral_id=uuid.uuid4(),
            reason=CancelReason.PATIENT_LEFT,
            cancelled_at=datetime(2026, 11, 1, 1, 30),
        )


def test_envelope_refuses_a_type_or_subject_that_does_not_match_its_payload() -> None:
    payload = _cancelled()
    with pytest.raises(ValidationError, match="does not match payload"):
        Envelope[ReferralCancelled](
            type="org.handoff.referral.created",
            source="/handoff/referral",
            subject=payload.referral_id,
            schemaversion=1,
            correlationid="c",
            data=payload,
        )
    with pytest.raises(ValidationError, match="subject"):
        Envelope[ReferralCancelled](
            type=payload.event_type,
            source="/handoff/referral",
            subject=uuid.uuid4(),
            schemaversion=1,
            correlationid="c",
            data=payload,
        )


def test_decoding_an_unknown_type_or_garbage_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        decode_event(b'{"type": "org.handoff.nope.nothing"}')
    with pytest.raises(ValueError, match="Invalid JSON"):
        decode_event(b"not json")


def test_topics_partition_key_and_dead_letter_naming() -> None:
    assert {t.value for t in Topic} == {
        "handoff.referrals",
        "handoff.dispatch",
        "handoff.pages",
        "handoff.sites",
    }
    referral_id = uuid.uuid4()
    assert partition_key(referral_id) == str(referral_id).encode()
    assert dead_letter_topic("handoff-referral") == "handoff-referral.dlq"
    assert {cls.topic for cls in EVENT_TYPES.values()} == set(Topic)


@pytest.mark.parametrize("payload_class", EVENT_TYPES.values(), ids=lambda c: c.event_type)
def test_committed_schema_file_matches_the_model(payload_class: type[Payload]) -> None:
    """Fails when a model changes and `handoff schemas generate` was not run."""
    on_disk = committed(payload_class)
    assert on_disk is not None, f"no schema file for {payload_class.event_type}"
    assert on_disk == generate(payload_class), (
        f"{payload_class.event_type}: the model differs from its committed JSON Schema; "
        "run `handoff schemas generate` and commit the result"
    )


@pytest.mark.parametrize("payload_class", EVENT_TYPES.values(), ids=lambda c: c.event_type)
def test_model_is_backward_compatible_with_its_committed_version(
    payload_class: type[Payload],
) -> None:
    on_disk = committed(payload_class)
    assert on_disk is not None
    assert breaking_changes(on_disk, generate(payload_class)) == []


def test_removing_a_field_from_a_model_is_caught_as_breaking() -> None:
    without_reason: type[Payload] = create_model(
        "ReferralCancelled",
        __base__=EventPayload,
        cancelled_at=(datetime, ...),
    )
    without_reason.event_type = ReferralCancelled.event_type
    without_reason.topic = ReferralCancelled.topic
    on_disk = committed(ReferralCancelled)
    assert on_disk is not None
    changes = breaking_changes(on_disk, generate(without_reason))
    assert any("data.reason: field removed" in change for change in changes), changes


def test_a_sites_events_are_keyed_by_the_site_and_round_trip() -> None:
    registered = SiteRegistered(
        site=SiteFacts(
            site_id="md-mercy", short_name="Mercy ED", state="MD", time_zone="America/New_York"
        ),
        registered_at=datetime(2026, 11, 27, 15, tzinfo=UTC),
    )
    envelope = Envelope.wrap(registered, source="/handoff/referral", correlation_id="site:md-mercy")

    assert envelope.subject == site_subject("md-mercy") == site_subject("md-mercy")
    assert envelope.subject != site_subject("md-bayview")
    assert envelope.topic is Topic.SITES
    assert partition_key(envelope.subject) == str(site_subject("md-mercy")).encode()
    decoded = decode_event(envelope.model_dump_json().encode())
    assert decoded.data == registered


def test_a_time_outside_the_calendar_once_in_utc_is_refused_not_raised() -> None:
    """fresh33b: 0001-01-01T00:00+00:01 is in year 0 in UTC; converting it raised an
    OverflowError, which HTTP answered 500. Now it is a validation error like any other."""
    with pytest.raises(ValidationError, match="out of range once converted to UTC"):
        ReferralCancelled.model_validate(
            {
                "referral_id": str(uuid.uuid4()),
                "reason": "patient_left",
                "cancelled_at": "0001-01-01T00:00:00+00:01",
            }
        )
