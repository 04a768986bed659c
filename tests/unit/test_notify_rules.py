"""Notify's pure rules: what a page says, when it may go, what follows a provider's answer."""

import base64
import hmac
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest
from pydantic import ValidationError

from handoff_notify.adapters.twilio import outcome_of
from handoff_notify.adapters.webhook import signature
from handoff_notify.domain import content
from handoff_notify.domain.content import MessageKind
from handoff_notify.domain.delivery import (
    Accepted,
    Ambiguous,
    Fail,
    Found,
    MarkSent,
    NotFound,
    Permanent,
    Reconcile,
    RetryIn,
    RetryPolicy,
    Transient,
    Unknowable,
    after_lookup,
    after_send,
    next_contact,
)
from handoff_notify.domain.links import LinkSigner
from handoff_notify.domain.offer import CoachOffer, OfferState
from handoff_notify.domain.throttle import (
    Allow,
    Defer,
    RecentSends,
    Refuse,
    ThrottleRules,
    throttle,
)
from handoff_notify.settings import NotifySettings
from handoff_schemas.vocabulary import CoachResponse, PageFailure, Urgency, WithdrawReason
from tests.support.patients import PHI_MARKERS

NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
LINK = "https://handoff.example/p/abc"


def test_an_sms_body_says_only_product_site_urgency_reply_code_and_link() -> None:
    page = content.offer("Mercy ED", Urgency.EMERGENT, LINK)
    assert page.text == (
        f"Handoff: emergent ED request at Mercy ED. Reply 1 to accept, 2 to decline, or open {LINK}"
    )
    bodies = [
        page.text,
        page.spoken,
        content.withdrawn("Mercy ED", WithdrawReason.CANCELLED).text,
        content.assigned("Mercy ED", NOW + timedelta(minutes=30), NOW, LINK).text,
    ]
    assert not [m for m in PHI_MARKERS for body in bodies if m in body]
    assert "within 30 min" in bodies[3]


def test_a_link_names_its_offer_and_a_changed_token_names_nothing() -> None:
    signer = LinkSigner("secret")
    offer_id = uuid4()
    token = signer.token(offer_id)
    assert signer.offer_id(token) == offer_id
    changed = token[:-2] + ("xy" if not token.endswith("xy") else "zz")
    assert signer.offer_id(changed) is None
    another_offer = uuid4().bytes + base64.urlsafe_b64decode(token + "==")[16:]
    assert signer.offer_id(base64.urlsafe_b64encode(another_offer).decode()) is None
    assert LinkSigner("another secret").offer_id(token) is None
    for not_a_token in ("not-a-token", "", token + "A", token[:-1], "é" * len(token)):
        assert signer.offer_id(not_a_token) is None


def test_an_offer_sms_with_its_link_is_one_segment() -> None:
    """160 GSM characters: more, and a coach's phone joins two or three messages."""
    link = f"https://handoff.example.org/p/{LinkSigner('secret').token(uuid4())}"
    page = content.offer("Mercy ED", Urgency.EMERGENT, link)
    assert len(page.text) <= 160, page.text


def test_an_open_offer_takes_accept_or_decline_until_it_expires() -> None:
    offer = CoachOffer(OfferState.OPEN, NOW + timedelta(minutes=5))
    assert offer.answers(NOW) == (CoachResponse.ACCEPTED, CoachResponse.DECLINED)
    assert offer.answers(NOW + timedelta(minutes=5)) == ()
    assert offer.still_wanted(NOW)
    assert not offer.still_wanted(NOW + timedelta(minutes=5))
    assert not offer.answer(CoachResponse.ARRIVED, NOW)
    assert offer.answer(CoachResponse.ACCEPTED, NOW)
    assert not offer.answer(CoachResponse.ACCEPTED, NOW), "an answer counts once"
    offer.assign(NOW + timedelta(hours=1))
    assert offer.answer(CoachResponse.ARRIVED, NOW)
    assert offer.answer(CoachResponse.COMPLETED, NOW)
    assert offer.answers(NOW) == ()


def test_a_withdrawn_offer_takes_no_answer_and_an_assignment_is_not_withdrawn() -> None:
    filled = CoachOffer(OfferState.ACCEPTED, NOW + timedelta(minutes=5))
    filled.withdraw(WithdrawReason.FILLED)
    assert filled.state is OfferState.WITHDRAWN
    assert not filled.answer(CoachResponse.ARRIVED, NOW)
    assigned = CoachOffer(OfferState.ASSIGNED, NOW)
    assigned.withdraw(WithdrawReason.CANCELLED)
    assert assigned.state is OfferState.ASSIGNED


RULES = ThrottleRules()


def test_new_offers_pass_the_throttle_until_a_flood() -> None:
    one = RecentSends(offers=1, latest=NOW - timedelta(seconds=5))
    assert throttle(MessageKind.OFFER, one, NOW, RULES) == Allow()
    flood = RecentSends(offers=20, latest=NOW)
    assert throttle(MessageKind.OFFER, flood, NOW, RULES) == Refuse()


def test_a_notice_waits_a_minute_after_the_last_message_to_that_destination() -> None:
    last = NOW - timedelta(seconds=20)
    verdict = throttle(MessageKind.WITHDRAWN, RecentSends(offers=1, latest=last), NOW, RULES)
    assert verdict == Defer(last + timedelta(minutes=1))
    old = RecentSends(offers=1, latest=NOW - timedelta(minutes=2))
    assert throttle(MessageKind.WITHDRAWN, old, NOW, RULES) == Allow()
    assert throttle(MessageKind.WITHDRAWN, RecentSends(), NOW, RULES) == Allow()


def test_only_a_handful_of_notices_per_quarter_hour() -> None:
    five = RecentSends(notices=5, latest=NOW - timedelta(minutes=2))
    assert throttle(MessageKind.WITHDRAWN, five, NOW, RULES) == Refuse()
    four = RecentSends(notices=4, latest=NOW - timedelta(minutes=2))
    assert throttle(MessageKind.WITHDRAWN, four, NOW, RULES) == Allow()


POLICY = RetryPolicy(max_attempts=3, first_delay=1.0, max_delay=10.0)


def test_transient_errors_back_off_then_fail_permanent_ones_fail_at_once() -> None:
    assert after_send(Transient("http_500"), 1, POLICY, 1.0) == RetryIn(1.0)
    assert after_send(Transient("http_500"), 2, POLICY, 0.5) == RetryIn(1.0)
    assert after_send(Transient("http_429", retry_after=7), 1, POLICY, 1.0) == RetryIn(7)
    assert after_send(Transient("http_500"), 3, POLICY, 1.0) == Fail(PageFailure.PROVIDER_ERROR)
    invalid = Permanent(PageFailure.INVALID_DESTINATION, "21211")
    assert after_send(invalid, 1, POLICY, 1.0) == Fail(PageFailure.INVALID_DESTINATION)
    assert after_send(Accepted("SM1"), 1, POLICY, 1.0) == MarkSent("SM1", False)


def test_a_lost_send_is_looked_up_never_resent_on_the_same_channel() -> None:
    assert after_send(Ambiguous("ReadTimeout"), 1, POLICY, 1.0) == Reconcile()
    assert after_lookup(Found("SM1", delivered=True)) == MarkSent("SM1", True)
    assert after_lookup(NotFound()) == Fail(PageFailure.PROVIDER_ERROR)
    assert after_lookup(Unknowable()) == Fail(PageFailure.NOT_DELIVERED)
    assert next_contact(0, 2) == 1
    assert next_contact(1, 2) is None


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (201, {"sid": "SM1", "status": "queued"}, {}, Accepted("SM1")),
        (
            400,
            {"code": 21211},
            {},
            Permanent(PageFailure.INVALID_DESTINATION, "http_400:21211", never_deliverable=True),
        ),
        (
            400,
            {"code": 21614},
            {},
            Permanent(PageFailure.INVALID_DESTINATION, "http_400:21614", never_deliverable=True),
        ),
        (
            400,
            {"code": 21610},
            {},
            Permanent(PageFailure.UNSUBSCRIBED, "http_400:21610", never_deliverable=True),
        ),
        (400, {"code": 21408}, {}, Permanent(PageFailure.INVALID_DESTINATION, "http_400:21408")),
        (401, {"code": 20003}, {}, Permanent(PageFailure.PROVIDER_ERROR, "http_401:20003")),
        (429, {"code": 20429}, {"Retry-After": "3"}, Transient("http_429:20429", 3.0)),
        (503, {"code": 20500}, {}, Transient("http_503:20500")),
    ],
)
def test_twilio_answers_are_read_by_status_and_error_code(
    status: int, body: dict[str, object], headers: dict[str, str], expected: object
) -> None:
    assert outcome_of(httpx.Response(status, json=body, headers=headers)) == expected


def test_webhook_signature_follows_slacks_scheme() -> None:
    expected = hmac.new(b"s3cret", b'v1:1700000000:{"text":"x"}', "sha256").hexdigest()
    assert signature("s3cret", "1700000000", b'{"text":"x"}') == "v1=" + expected


def test_the_sandbox_cannot_be_selected_in_production() -> None:
    with pytest.raises(ValidationError, match="refused when HANDOFF_ENVIRONMENT=production"):
        NotifySettings(
            database_url="postgresql://x/y",
            notify_link_secret="s",
            notify_delivery="sandbox",
            handoff_environment="production",
        )
    with pytest.raises(ValidationError, match="needs TWILIO_ACCOUNT_SID"):
        NotifySettings(database_url="postgresql://x/y", notify_link_secret="s")
