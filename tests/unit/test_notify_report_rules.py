"""A provider's final delivery report moves only a `sent` message: end states stay put."""

import pytest

from handoff_notify.domain.delivery import MessageState, after_report, coach_unreachable
from handoff_schemas.vocabulary import PageFailure

GONE = PageFailure.INVALID_DESTINATION


@pytest.mark.parametrize("delivered", [True, False])
def test_a_sent_message_takes_the_report(delivered: bool) -> None:
    expected = MessageState.DELIVERED if delivered else MessageState.FAILED
    assert after_report(MessageState.SENT, delivered) is expected


@pytest.mark.parametrize(
    "state",
    [
        MessageState.DELIVERED,
        MessageState.FAILED,
        MessageState.THROTTLED,
        MessageState.CANCELLED,
        MessageState.PENDING,
        MessageState.SENDING,
    ],
)
@pytest.mark.parametrize("delivered", [True, False])
def test_any_other_state_is_left_alone(state: MessageState, delivered: bool) -> None:
    assert after_report(state, delivered) is None


def test_an_email_failing_after_the_sms_went_out_leaves_the_coach_reached() -> None:
    """Found by a new user: SMS sent, email (the last method) failed after the fallback,
    and the offer was withdrawn as unreachable two minutes into a five-minute window."""
    assert not coach_unreachable(None, [MessageState.SENT, MessageState.FAILED], GONE)
    assert not coach_unreachable(None, [MessageState.DELIVERED, MessageState.FAILED], GONE)


def test_the_coach_is_unreached_only_when_no_page_reached_a_provider_and_none_is_left() -> None:
    assert coach_unreachable(None, [MessageState.FAILED, MessageState.FAILED], GONE)
    assert coach_unreachable(None, [MessageState.THROTTLED, MessageState.FAILED], GONE)
    assert not coach_unreachable(1, [MessageState.FAILED], GONE)


def test_a_provider_outage_never_makes_the_coach_unreachable() -> None:
    """Found by a new user (#12 F1): a 503 outage closed offers as coach_unreachable; the
    coach's phone was fine. Its pages are retried until the page deadline instead."""
    failure = PageFailure.PROVIDER_ERROR
    assert not coach_unreachable(None, [MessageState.FAILED, MessageState.FAILED], failure)


def test_our_throttle_on_the_last_method_says_every_channel_failed() -> None:
    """#12 F2 made a throttled page wait out its deadline, so that the offer was not closed
    unreachable; fresh28 found the referral then sat "offered" for a minute per coach.
    Now every channel failed (matching moves on at once) and matching, reading the
    failure `throttled`, ends the offer not_contacted, never unreachable (decision 0032;
    tests/unit/test_matching_dispatch.py)."""
    assert coach_unreachable(None, [MessageState.THROTTLED], PageFailure.THROTTLED)
    assert not coach_unreachable(1, [MessageState.THROTTLED], PageFailure.THROTTLED)
