"""Follow-up rules without I/O: the phone, the form, the schedule, windows and retries."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet

from handoff_referral.adapters.contact_vault import (
    ContactVault,
    UnreadableContact,
    VaultNotConfigured,
)
from handoff_referral.domain.follow_ups import (
    BadInput,
    CallDays,
    Contact,
    DayPart,
    TaskState,
    check_schedule,
    normalise_phone,
    read_attempt_form,
    read_visit_form,
    retry_due,
    schedule_field,
    schedule_text,
    windows,
)
from handoff_referral.entrypoints.follow_up_pages import DONE_TEXT, templates
from handoff_schemas.vocabulary import FollowUpResult, RecoveryOutcome

NEW_YORK = "America/New_York"
EVENINGS = Contact(phone="+14435550187", day_part=DayPart.EVENINGS, days=CallDays.ANY_DAY)


@pytest.mark.parametrize(
    ("typed", "e164"),
    [
        ("443-555-0187", "+14435550187"),
        ("(443) 555 0187", "+14435550187"),
        ("1 443 555 0187", "+14435550187"),
        ("+14435550187", "+14435550187"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_a_phone_is_normalised_to_e164(typed: str, e164: str) -> None:
    assert normalise_phone(typed) == e164


@pytest.mark.parametrize("typed", ["", "555-0187", "043-555-0187", "+1 043 555 0187", "call me"])
def test_a_phone_that_is_not_one_names_the_field(typed: str) -> None:
    with pytest.raises(BadInput) as refused:
        normalise_phone(typed)
    assert refused.value.field == "callback_phone"


def test_a_consenting_visit_form_gives_the_contact_and_outcomes() -> None:
    choice = read_visit_form(
        {
            "consent": ["yes"],
            "callback_phone": ["443 555 0187"],
            "day_part": ["evenings"],
            "days": ["weekdays"],
            "outcomes": ["moud", "naloxone_kit"],
        }
    )
    assert choice.consent
    assert choice.contact == Contact(
        phone="+14435550187", day_part=DayPart.EVENINGS, days=CallDays.WEEKDAYS
    )
    assert choice.outcomes == {RecoveryOutcome.MOUD, RecoveryOutcome.NALOXONE_KIT}


def test_without_consent_no_contact_is_kept_even_if_typed() -> None:
    choice = read_visit_form(
        {"consent": ["no"], "callback_phone": ["443 555 0187"], "outcomes": ["none"]}
    )
    assert not choice.consent
    assert choice.contact is None


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"outcomes": ["none"]}, "consent"),
        ({"consent": ["maybe"], "outcomes": ["none"]}, "consent"),
        ({"consent": ["yes"], "day_part": ["evenings"], "days": ["any_day"]}, "callback_phone"),
        (
            {"consent": ["yes"], "callback_phone": ["4435550187"], "days": ["any_day"]},
            "day_part",
        ),
        (
            {"consent": ["yes"], "callback_phone": ["4435550187"], "day_part": ["evenings"]},
            "days",
        ),
        ({"consent": ["no"]}, "outcomes"),
        ({"consent": ["no"], "outcomes": ["none", "moud"]}, "outcomes"),
        ({"consent": ["no"], "outcomes": ["heroin"]}, "outcomes"),
    ],
)
def test_a_bad_visit_form_names_its_field(form: dict[str, list[str]], field: str) -> None:
    form = {"outcomes": ["none"], **form} if field != "outcomes" else form
    with pytest.raises(BadInput) as refused:
        read_visit_form(form)
    assert refused.value.field == field


def test_an_attempt_form_takes_outcomes_only_when_reached() -> None:
    assert read_attempt_form({"result": ["reached"], "outcomes": ["housing"]}) == (
        FollowUpResult.REACHED,
        frozenset({RecoveryOutcome.HOUSING}),
    )
    assert read_attempt_form({"result": ["no_answer"]}) == (FollowUpResult.NO_ANSWER, frozenset())
    for form, field in [
        ({"result": ["no_answer"], "outcomes": ["moud"]}, "outcomes"),
        ({"result": ["reached"]}, "outcomes"),
        ({"result": ["lost"]}, "result"),
    ]:
        with pytest.raises(BadInput) as refused:
            read_attempt_form(form)
        assert refused.value.field == field


@pytest.mark.parametrize("days", [[], [0, 30], [1, 366], [30, 1], [1, 1], list(range(1, 14))])
def test_a_schedule_is_1_to_365_ascending(days: list[int]) -> None:
    with pytest.raises(BadInput) as refused:
        check_schedule(days)
    assert refused.value.field == "follow_up_days"


def test_schedule_reads_as_a_sentence() -> None:
    assert check_schedule([1, 30, 90]) == (1, 30, 90)
    assert schedule_text([1, 30, 90]) == "1 day, 30 days and 90 days"
    assert schedule_text([7]) == "7 days"


def test_windows_open_at_the_patients_call_time_on_the_nth_local_day() -> None:
    # 02:30 UTC on 2 Dec is still 1 Dec in New York: day 1 is 2 Dec, local.
    visit = datetime(2026, 12, 2, 2, 30, tzinfo=UTC)
    found = windows(visit, (1, 30, 90), EVENINGS, NEW_YORK)
    zone = ZoneInfo(NEW_YORK)
    assert [w.opens_at.astimezone(zone).replace(tzinfo=None) for w in found] == [
        datetime(2026, 12, 2, 18, 0),
        datetime(2026, 12, 31, 18, 0),
        datetime(2027, 3, 1, 18, 0),  # summer time began 14 March: not yet
    ]
    assert [w.ends_at for w in found] == [
        found[1].opens_at,
        found[2].opens_at,
        datetime(2027, 3, 15, 22, 0, tzinfo=UTC),  # 18:00 EDT: 14 local days, across DST
    ]
    assert all(w.opens_at.tzinfo is UTC for w in found)


def test_a_weekdays_only_patient_is_not_called_on_a_weekend() -> None:
    weekdays = Contact(phone="+14435550187", day_part=DayPart.MORNINGS, days=CallDays.WEEKDAYS)
    friday = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    [window] = windows(friday, (1,), weekdays, NEW_YORK)
    local = window.opens_at.astimezone(ZoneInfo(NEW_YORK))
    assert (local.date().isoformat(), local.hour) == ("2026-12-07", 10)  # Monday


def test_no_answer_retries_one_then_two_days_later_inside_the_window() -> None:
    attempted = datetime(2026, 12, 2, 23, 5, tzinfo=UTC)  # 18:05 in New York
    ends = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    second = retry_due(1, attempted, ends, EVENINGS, NEW_YORK)
    assert second == datetime(2026, 12, 3, 23, 0, tzinfo=UTC)
    third = retry_due(2, second, ends, EVENINGS, NEW_YORK)
    assert third == datetime(2026, 12, 5, 23, 0, tzinfo=UTC)
    assert retry_due(3, third, ends, EVENINGS, NEW_YORK) is None
    # Never at or beyond the window's end: the task closes as not reached instead.
    assert (
        retry_due(1, attempted, datetime(2026, 12, 3, 23, 0, tzinfo=UTC), EVENINGS, NEW_YORK)
        is None
    )


def test_the_vault_seals_with_the_first_key_and_opens_with_any() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = ContactVault(old).seal(EVENINGS)
    assert b"4435550187" not in sealed
    rotated = ContactVault(f"{new},{old}")
    assert rotated.open(sealed) == EVENINGS
    resealed = rotated.reseal(sealed)
    assert ContactVault(new).open(resealed) == EVENINGS
    with pytest.raises(UnreadableContact):
        ContactVault(new).open(sealed)
    with pytest.raises(VaultNotConfigured):
        ContactVault(None).seal(EVENINGS)
    with pytest.raises(ValueError, match="Fernet key"):
        ContactVault("not-a-key")


def test_the_visit_form_carries_the_schedule_its_statement_read_out() -> None:
    """Finding #16f-1: the consent is checked against the schedule the page showed."""
    form = {
        "consent": ["yes"],
        "callback_phone": ["4435550187"],
        "day_part": ["evenings"],
        "days": ["any_day"],
        "outcomes": ["none"],
    }
    assert read_visit_form({**form, "schedule": ["2,7"]}).shown_schedule == (2, 7)
    assert read_visit_form(form).shown_schedule is None
    assert read_visit_form({**form, "schedule": ["2,x"]}).shown_schedule is None
    assert schedule_field((1, 30, 90)) == "1,30,90"


def test_the_follow_up_pages_words_fit_what_happened() -> None:
    """Finding #16f cosmetics: a task closed after one attempt (the next would fall past
    its window) is not "no answer on every try"; the call form asks what the patient has
    now, not what they "got today"."""
    closed = DONE_TEXT[TaskState.NOT_REACHED]
    assert "every try" not in closed
    assert "window" in closed
    page = templates.get_template("follow_up.html").render(
        page="open",
        token="t",
        window_days=30,
        attempt=1,
        contact=Contact(phone="+14435550187", day_part=DayPart.EVENINGS, days=CallDays.ANY_DAY),
        form={"result": "", "outcomes": []},
        results=[],
        outcome_choices=[],
    )
    assert "What the patient has now" in page
    assert "today" not in page
