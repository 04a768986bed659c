"""The referral timeline's rules: the status is what is true now; matching's steps while it
looks for a coach are recorded each time; a coach's steps once each; final stays final."""

import pytest

from handoff_referral.domain.status import (
    CancelRefused,
    Status,
    Step,
    check_cancellable,
    observe,
    record_offer_ending,
)
from handoff_referral.entrypoints.consumers import WITHDRAWAL_STEPS
from handoff_schemas.vocabulary import WithdrawReason

S = Status


def _play(steps: list[Status]) -> tuple[Status, list[Status]]:
    """The status and the timeline after seeing `steps`, from a received referral."""
    current, timeline = S.RECEIVED, [S.RECEIVED]
    for step in steps:
        outcome = observe(current, frozenset(timeline), step)
        if outcome.record:
            timeline.append(step)
        current = outcome.new_status
    return current, timeline


def test_steps_in_order_advance_the_status_and_are_recorded() -> None:
    status, timeline = _play([S.OFFERED, S.ACCEPTED, S.ARRIVED, S.COMPLETED])
    assert status is S.COMPLETED
    assert timeline == [S.RECEIVED, S.OFFERED, S.ACCEPTED, S.ARRIVED, S.COMPLETED]


def test_a_late_coach_step_is_recorded_without_moving_the_status_back() -> None:
    status, timeline = _play([S.OFFERED, S.ARRIVED, S.ACCEPTED])
    assert status is S.ARRIVED
    assert timeline == [S.RECEIVED, S.OFFERED, S.ARRIVED, S.ACCEPTED]


def test_a_coach_step_seen_twice_is_recorded_once() -> None:
    status, timeline = _play([S.OFFERED, S.ACCEPTED, S.ACCEPTED, S.ARRIVED, S.ARRIVED])
    assert status is S.ARRIVED
    assert timeline == [S.RECEIVED, S.OFFERED, S.ACCEPTED, S.ARRIVED]


def test_offered_waiting_offered_accepted_shows_each_occurrence() -> None:
    status, timeline = _play([S.OFFERED, S.WAITING, S.OFFERED, S.ACCEPTED])
    assert status is S.ACCEPTED
    assert timeline == [S.RECEIVED, S.OFFERED, S.WAITING, S.OFFERED, S.ACCEPTED]


def test_waiting_is_the_status_while_every_coach_is_busy() -> None:
    status, timeline = _play([S.WAITING])
    assert status is S.WAITING
    assert timeline == [S.RECEIVED, S.WAITING]


def test_every_offer_is_an_entry_but_waiting_said_twice_is_one() -> None:
    status, timeline = _play([S.OFFERED, S.OFFERED, S.WAITING, S.WAITING])
    assert status is S.WAITING
    assert timeline == [S.RECEIVED, S.OFFERED, S.OFFERED, S.WAITING]


def test_unassigned_is_not_final_a_later_offer_and_acceptance_move_it_on() -> None:
    status, timeline = _play([S.OFFERED, S.UNASSIGNED])
    assert status is S.UNASSIGNED
    status, timeline = _play([S.OFFERED, S.UNASSIGNED, S.OFFERED])
    assert status is S.OFFERED
    status, timeline = _play([S.OFFERED, S.UNASSIGNED, S.OFFERED, S.ACCEPTED])
    assert status is S.ACCEPTED
    assert timeline == [S.RECEIVED, S.OFFERED, S.UNASSIGNED, S.OFFERED, S.ACCEPTED]


def test_an_acceptance_can_follow_unassigned_directly() -> None:
    """A coach answering a withdrawn page late is matching's call; if it assigns, so be it."""
    status, _ = _play([S.OFFERED, S.UNASSIGNED, S.ACCEPTED])
    assert status is S.ACCEPTED


@pytest.mark.parametrize("late", [S.UNASSIGNED, S.WAITING, S.EXPIRED, S.OFFERED])
def test_matchings_steps_after_a_coach_accepted_change_nothing(late: Status) -> None:
    status, timeline = _play([S.OFFERED, S.ACCEPTED, late])
    assert status is S.ACCEPTED
    assert timeline == [S.RECEIVED, S.OFFERED, S.ACCEPTED]


def test_an_offer_seen_after_its_own_arrival_is_recorded_once() -> None:
    status, timeline = _play([S.ARRIVED, S.OFFERED, S.ACCEPTED, S.OFFERED])
    assert status is S.ARRIVED
    assert timeline == [S.RECEIVED, S.ARRIVED, S.OFFERED, S.ACCEPTED]


@pytest.mark.parametrize("before", [[S.WAITING], [S.OFFERED, S.UNASSIGNED], [S.OFFERED]])
def test_expired_is_final(before: list[Status]) -> None:
    status, timeline = _play([*before, S.EXPIRED, S.OFFERED, S.ACCEPTED, S.CANCELLED])
    assert status is S.EXPIRED
    assert timeline == [S.RECEIVED, *before, S.EXPIRED]


def test_a_cancelled_referral_takes_no_further_steps() -> None:
    status, timeline = _play([S.OFFERED, S.CANCELLED, S.OFFERED, S.ACCEPTED, S.EXPIRED])
    assert status is S.CANCELLED
    assert timeline == [S.RECEIVED, S.OFFERED, S.CANCELLED]


def test_offer_endings_are_recorded_until_the_referral_is_over() -> None:
    for open_status in (S.OFFERED, S.WAITING, S.UNASSIGNED, S.ACCEPTED, S.ARRIVED):
        assert record_offer_ending(open_status)
    for final in (S.COMPLETED, S.CANCELLED, S.EXPIRED):
        assert not record_offer_ending(final)


def test_not_contacted_is_a_step_of_its_own_not_a_missed_answer() -> None:
    assert WITHDRAWAL_STEPS[WithdrawReason.NOT_CONTACTED] is Step.COACH_NOT_CONTACTED
    assert WITHDRAWAL_STEPS[WithdrawReason.UNREACHABLE] is Step.COACH_UNREACHABLE
    assert WITHDRAWAL_STEPS[WithdrawReason.EXPIRED] is Step.COACH_DID_NOT_ANSWER
    # A filled or cancelled offer is told by the referral's own accepted / cancelled step.
    assert WithdrawReason.FILLED not in WITHDRAWAL_STEPS
    assert {s.value for s in Status} < {s.value for s in Step}


@pytest.mark.parametrize("status", [S.RECEIVED, S.OFFERED, S.WAITING, S.UNASSIGNED, S.ACCEPTED])
def test_an_open_referral_can_be_cancelled(status: Status) -> None:
    assert check_cancellable(status) is True


def test_cancelling_twice_is_a_no_op_and_a_finished_referral_refuses() -> None:
    assert check_cancellable(S.CANCELLED) is False
    for final in (S.COMPLETED, S.EXPIRED):
        with pytest.raises(CancelRefused, match=final.value):
            check_cancellable(final)


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (S.ARRIVED, "an arrived referral cannot be cancelled"),
        (S.EXPIRED, "an expired referral cannot be cancelled"),
        (S.COMPLETED, "a completed referral cannot be cancelled"),
    ],
)
def test_the_refusal_reads_as_english(status: Status, text: str) -> None:
    # The text is the REST/FHIR 409 body and the HL7 ERR-8 an operator reads.
    assert str(CancelRefused(status)) == text


def test_once_the_coach_arrived_a_hospital_cancel_is_refused() -> None:
    # The coach is at the bedside: a late cancel (orders cleaned up at discharge) must not
    # end the visit; REST and FHIR answer 409, HL7 CA is AA and changes nothing.
    with pytest.raises(CancelRefused, match="arrived"):
        check_cancellable(S.ARRIVED)
