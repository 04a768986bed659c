"""The chaos suite's invariants on a recorded history (tests/chaos/history.py)."""

import uuid
from datetime import UTC, datetime
from typing import Any

from handoff_schemas import Envelope
from handoff_schemas.events import CoachResponded, PageSent
from handoff_schemas.vocabulary import Channel, CoachResponse, ResponseVia
from tests.chaos.history import (
    Fault,
    Post,
    lost,
    pages_sent_twice,
    published_twice,
    recovery_seconds,
    stuck,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _answer(referral: uuid.UUID, offer: uuid.UUID, response: CoachResponse) -> Envelope[Any]:
    payload = CoachResponded(
        referral_id=referral,
        offer_id=offer,
        coach_id=uuid.UUID(int=7),
        response=response,
        via=ResponseVia.LINK,
        responded_at=NOW,
    )
    return Envelope.wrap(payload, source="/handoff/tests", correlation_id="c")


def test_the_same_answer_under_two_ids_is_published_twice_but_one_id_twice_is_not() -> None:
    referral, offer = uuid.uuid4(), uuid.uuid4()
    once = _answer(referral, offer, CoachResponse.ACCEPTED)
    again = _answer(referral, offer, CoachResponse.ACCEPTED)
    other = _answer(referral, offer, CoachResponse.ARRIVED)
    assert published_twice([once, once, other]) == {}
    [(key, ids)] = published_twice([once, again, other]).items()
    assert key == ("CoachResponded", str(referral), offer, CoachResponse.ACCEPTED)
    assert ids == 2


def test_a_page_is_keyed_by_its_own_id() -> None:
    referral, offer = uuid.uuid4(), uuid.uuid4()

    def sent(page: uuid.UUID) -> Envelope[Any]:
        payload = PageSent(
            referral_id=referral,
            page_id=page,
            offer_id=offer,
            coach_id=uuid.UUID(int=7),
            channel=Channel.SMS,
            sent_at=NOW,
        )
        return Envelope.wrap(payload, source="/handoff/tests", correlation_id="c")

    page = uuid.uuid4()
    assert published_twice([sent(page), sent(uuid.uuid4())]) == {}
    assert len(published_twice([sent(page), sent(page)])) == 1


def test_pages_twice_lost_and_stuck_are_read_off_the_history() -> None:
    assert pages_sent_twice([("o1", "sms"), ("o1", "call"), ("o2", "sms"), ("o1", "sms")]) == {
        ("o1", "sms"): 2
    }
    assert lost(["r1", "r2"], {"r1": "accepted"}) == ["r2"]
    assert stuck({"r1": "accepted", "r2": "unassigned", "r3": "waiting", "r4": "received"}) == {
        "r3": "waiting",
        "r4": "received",
    }


def test_recovery_counts_from_the_fault_end_to_the_first_later_referral_accepted() -> None:
    fault = Fault("broker SIGKILL", "broker 1", began_at=10.0, ended_at=20.0)
    before = Post("e1", asked_at=15.0, referral_id="r1")
    after = Post("e2", asked_at=21.0, referral_id="r2")
    later = Post("e3", asked_at=22.0, referral_id="r3")
    accepted = {"r1": 16.0, "r2": 29.5, "r3": 25.0}
    assert recovery_seconds(fault, [before, after, later], accepted) == 5.0
    assert recovery_seconds(fault, [before], accepted) is None
