"""The referral timeline's rules: steps once each, status the furthest, closed stays closed."""

import pytest

from handoff_referral.domain.status import CancelRefused, Status, check_cancellable, observe

S = Status


def test_steps_in_order_advance_the_status_and_are_recorded() -> None:
    recorded = frozenset({S.RECEIVED})
    current = S.RECEIVED
    for step in (S.OFFERED, S.ACCEPTED, S.ARRIVED, S.COMPLETED):
        outcome = observe(current, recorded, step)
        assert outcome.record
        assert outcome.new_status is step
        current, recorded = outcome.new_status, recorded | {step}
    assert current is S.COMPLETED


def test_a_late_step_is_recorded_without_moving_the_status_back() -> None:
    outcome = observe(S.ARRIVED, frozenset({S.RECEIVED, S.OFFERED, S.ARRIVED}), S.ACCEPTED)
    assert outcome.record
    assert outcome.new_status is S.ARRIVED


def test_a_step_seen_twice_is_recorded_once() -> None:
    outcome = observe(S.OFFERED, frozenset({S.RECEIVED, S.OFFERED}), S.OFFERED)
    assert not outcome.record
    assert outcome.new_status is S.OFFERED


@pytest.mark.parametrize("closed", [S.CANCELLED, S.UNASSIGNED])
def test_a_closed_referral_takes_no_further_steps(closed: Status) -> None:
    for step in (S.OFFERED, S.ACCEPTED, S.CANCELLED, S.UNASSIGNED):
        outcome = observe(closed, frozenset({S.RECEIVED, closed}), step)
        assert not outcome.record
        assert outcome.new_status is closed


def test_unassigned_after_a_coach_accepted_changes_nothing() -> None:
    outcome = observe(S.ACCEPTED, frozenset({S.RECEIVED, S.OFFERED, S.ACCEPTED}), S.UNASSIGNED)
    assert not outcome.record
    assert outcome.new_status is S.ACCEPTED


def test_unassigned_closes_an_offered_referral() -> None:
    outcome = observe(S.OFFERED, frozenset({S.RECEIVED, S.OFFERED}), S.UNASSIGNED)
    assert outcome.record
    assert outcome.new_status is S.UNASSIGNED


@pytest.mark.parametrize("status", [S.RECEIVED, S.OFFERED, S.ACCEPTED, S.ARRIVED])
def test_an_open_referral_can_be_cancelled(status: Status) -> None:
    assert check_cancellable(status) is True


def test_cancelling_twice_is_a_no_op_and_a_finished_referral_refuses() -> None:
    assert check_cancellable(S.CANCELLED) is False
    for final in (S.COMPLETED, S.UNASSIGNED):
        with pytest.raises(CancelRefused, match=final.value):
            check_cancellable(final)
