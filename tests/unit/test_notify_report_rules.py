"""A provider's final delivery report moves only a `sent` message: end states stay put."""

import pytest

from handoff_notify.domain.delivery import MessageState, after_report


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
