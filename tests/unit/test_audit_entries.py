"""The audit trail's domain pieces (decision 0024): an entry holds ids and field names only,
and the export's CSV and JSON carry every column."""

import csv
import io
import json
import uuid
from datetime import UTC, datetime
from uuid import UUID

import pytest
from typer.testing import CliRunner

from handoff_platform.audit import (
    COLUMNS,
    Accessor,
    ActorKind,
    AuditRecord,
    InvalidAuditEntry,
    Purpose,
    address_of,
    audit_cli,
    parse_bound,
    to_csv,
    to_json,
)
from handoff_platform.http import ApiError
from handoff_referral.adapters.webhook_store import ClaimedDelivery
from handoff_referral.entrypoints.http import REFERRAL_FIELDS
from handoff_referral.webhooks import disclosed_to

KEY = Accessor(ActorKind.API_KEY, "hok_3f2a9c", Purpose.TREATMENT, "10.0.0.7")


def test_an_entry_names_the_reader_the_record_and_the_fields() -> None:
    referral_id = uuid.uuid4()
    entry = KEY.saw("referral", referral_id, ["status", "patient"])
    assert entry.record_id == str(referral_id)
    assert entry.fields == ("status", "patient")
    assert entry.accessor.kind is ActorKind.API_KEY


@pytest.mark.parametrize(
    "fields",
    [
        [],
        ["Quentin Zebulon"],  # a value, not a name
        ["+14105550100"],
        ["notes: fentanyl"],
        ["x" * 65],
    ],
)
def test_anything_but_field_names_is_refused(fields: list[str]) -> None:
    with pytest.raises(InvalidAuditEntry, match="fields"):
        KEY.saw("referral", uuid.uuid4(), fields)


@pytest.mark.parametrize("actor_id", ["", "Quentin Zebulon", "+14105550100", "a/b"])
def test_an_actor_id_must_be_an_id(actor_id: str) -> None:
    with pytest.raises(InvalidAuditEntry, match="actor_id"):
        Accessor(ActorKind.COACH, actor_id, Purpose.TREATMENT)


def test_a_client_address_must_be_an_address() -> None:
    assert Accessor(ActorKind.COACH, "c1", Purpose.TREATMENT, "2001:db8::1").client_address
    with pytest.raises(InvalidAuditEntry, match="client_address"):
        Accessor(ActorKind.COACH, "c1", Purpose.TREATMENT, "ed bay 4")


def test_a_record_id_must_be_an_id() -> None:
    with pytest.raises(InvalidAuditEntry, match="record_id"):
        KEY.saw("referral", "Zebulon, Quentin", ["status"])


def test_the_hospital_get_names_every_field_it_answers_with() -> None:
    assert {"patient", "callback_phone", "notes", "location", "timeline"} <= set(REFERRAL_FIELDS)


def test_a_webhook_attempt_is_a_disclosure_to_the_sites_host_never_its_path() -> None:
    delivery = ClaimedDelivery(
        delivery_id=uuid.uuid4(),
        site_id="md-mercy",
        referral_id=UUID("00000000-0000-4000-8000-000000000001"),
        external_id="ED-1",
        step="received",
        status="received",
        at=datetime(2026, 12, 1, tzinfo=UTC),
        attempts=0,
        due_since=datetime(2026, 12, 1, tzinfo=UTC),
        correlation_id="c",
        url="https://ehr.mercy.example/hooks/handoff?token=abc",
        signing_secrets=[],
    )
    entry = disclosed_to(delivery)
    assert entry.accessor.kind is ActorKind.SITE_CALLBACK
    assert entry.accessor.actor_id == "md-mercy"
    assert entry.accessor.purpose is Purpose.DISCLOSURE
    assert entry.accessor.client_address == "ehr.mercy.example"
    assert entry.record_id == "00000000-0000-4000-8000-000000000001"
    assert "external_id" in entry.fields


RECORD = AuditRecord(
    entry_id=7,
    at=datetime(2026, 12, 1, 11, 30, tzinfo=UTC),
    actor_kind="coach",
    actor_id="5b1c",
    record_kind="referral",
    record_id="r-1",
    fields=["location", "callback_phone"],
    purpose="treatment",
    client_address=None,
)


def test_the_csv_has_a_header_of_every_column_and_one_row_an_entry() -> None:
    rows = list(csv.reader(io.StringIO(to_csv([RECORD]))))
    assert rows[0] == list(COLUMNS)
    assert rows[1] == [
        "7",
        "2026-12-01T11:30:00Z",
        "coach",
        "5b1c",
        "referral",
        "r-1",
        "location;callback_phone",
        "treatment",
        "",
    ]


def test_the_json_is_one_object_an_entry_with_utc_times() -> None:
    [entry] = json.loads(to_json([RECORD]))
    assert entry["at"] == "2026-12-01T11:30:00Z"
    assert entry["fields"] == ["location", "callback_phone"]
    assert set(entry) == set(COLUMNS)


def test_the_export_command_names_a_bad_option_and_exits_2() -> None:
    runner = CliRunner()
    cli = audit_cli("referral")
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    bad = runner.invoke(cli, ["--from", "yesterday", "--to", "2026-12-02"], env=env)
    assert bad.exit_code == 2
    assert "--from: not an ISO 8601 date-time" in bad.output
    backwards = runner.invoke(cli, ["--from", "2026-12-02", "--to", "2026-12-01"], env=env)
    assert backwards.exit_code == 2
    assert "--to must be after --from" in backwards.output


def test_a_peer_that_is_not_an_address_is_recorded_as_unknown_not_refused() -> None:
    assert address_of("10.0.0.7") == "10.0.0.7"
    assert address_of("ehr.mercy.example") == "ehr.mercy.example"
    assert address_of("bücher.example") is None
    assert address_of("a b") is None
    assert address_of(None) is None


def test_the_admin_exports_bounds_are_plain_dates_or_date_times_with_an_offset() -> None:
    """Finding #16f-7: `?from=2026-12-01` was a 422 though the CLI takes it."""
    assert parse_bound("2026-12-01", "from") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_bound("2026-12-01T14:58:17Z", "to") == datetime(
        2026, 12, 1, 14, 58, 17, tzinfo=UTC
    )
    for text, field in (
        ("2026-12-01T14:58", "from"),
        ("yesterday", "to"),
        ("2026-02-30", "to"),
        ("0001-01-01T00:00:00+00:01", "from"),  # year 0 in UTC: was a 500 (fresh33b)
        ("9999-12-31T23:59:59-00:01", "to"),
    ):
        with pytest.raises(ApiError) as refused:
            parse_bound(text, field)
        assert (refused.value.status, refused.value.field) == (422, field)
