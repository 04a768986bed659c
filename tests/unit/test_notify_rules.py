"""Notify's pure rules: what a page says, when it may go, what follows a provider's answer."""

import base64
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
    NoticePlan,
    RecentSends,
    Refuse,
    ThrottleRules,
    plan_notices,
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
        f"Handoff: emergent request at Mercy ED. Reply 1 to accept, 2 to decline, or open {LINK}"
    )
    bodies = [
        page.text,
        page.spoken,
        content.withdrawn("Mercy ED", WithdrawReason.CANCELLED).text,
        content.assigned("Mercy ED", NOW + timedelta(minutes=30), NOW, LINK).text,
    ]
    assert not [m for m in PHI_MARKERS for body in bodies if m in body]
    assert "(30 min)" in bodies[3]


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


def test_a_paged_offer_ends_its_ack_timeout_after_the_first_page_not_at_expires_at() -> None:
    """Issue #12: matching ends an offer the ack timeout (expires_at - page_deadline) after
    its first page; notify, down meanwhile, must not page it on until expires_at."""
    page_deadline = NOW + timedelta(seconds=60)
    offer = CoachOffer(
        OfferState.OPEN, page_deadline + timedelta(seconds=90), page_deadline=page_deadline
    )
    assert offer.answer_deadline() == page_deadline + timedelta(seconds=90)  # not paged yet
    offer.paged_at = NOW + timedelta(seconds=5)
    assert offer.answer_deadline() == NOW + timedelta(seconds=95)
    assert offer.may_page(NOW + timedelta(seconds=94), first_page_out=True)
    assert not offer.may_page(NOW + timedelta(seconds=95), first_page_out=True)
    assert offer.answers(NOW + timedelta(seconds=95)) == ()
    made_before = CoachOffer(OfferState.OPEN, NOW + timedelta(minutes=5), paged_at=NOW)
    assert made_before.answer_deadline() == NOW + timedelta(minutes=5)


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
    one = RecentSends(offers=1)
    assert throttle(MessageKind.OFFER, one, NOW, RULES) == Allow()
    flood = RecentSends(offers=20)
    assert throttle(MessageKind.OFFER, flood, NOW, RULES) == Refuse()


@pytest.mark.parametrize("kind", [MessageKind.WITHDRAWN, MessageKind.ASSIGNED])
def test_answers_about_an_offer_go_at_once_however_recent_the_last_text(
    kind: MessageKind,
) -> None:
    """A cancellation a minute late can send a coach out for nothing: no spacing."""
    just_paged = RecentSends(offers=3, notices=4)
    assert throttle(kind, just_paged, NOW, RULES) == Allow()
    assert throttle(kind, RecentSends(), NOW, RULES) == Allow()


def test_answers_about_offers_stop_only_at_the_flood_ceiling() -> None:
    assert throttle(MessageKind.WITHDRAWN, RecentSends(notices=19), NOW, RULES) == Allow()
    assert throttle(MessageKind.WITHDRAWN, RecentSends(notices=20), NOW, RULES) == Refuse()


@pytest.mark.parametrize("kind", [MessageKind.WITHDRAWN, MessageKind.ASSIGNED])
def test_a_notice_about_an_offer_the_coach_said_yes_to_passes_the_flood_ceiling(
    kind: MessageKind,
) -> None:
    """fresh33c: the cancellation of a referral the coach held was refused, for good, on a
    phone that had had twenty notices that quarter hour; the coach went out for nothing."""
    spent = RecentSends(offers=20, notices=20)
    assert throttle(kind, spent, NOW, RULES, coach_said_yes=True) == Allow()
    assert throttle(MessageKind.OFFER, spent, NOW, RULES, coach_said_yes=True) == Refuse()


def test_supervisor_notices_go_singly_until_the_windows_last_slot() -> None:
    assert plan_notices(3, 0, None, RULES) == NoticePlan(3, False)
    assert plan_notices(1, 3, NOW - timedelta(minutes=3), RULES) == NoticePlan(1, False)
    assert plan_notices(1, 4, NOW - timedelta(minutes=3), RULES) == NoticePlan(0, True)


def test_past_the_limit_the_last_slot_carries_a_digest_of_all_the_rest() -> None:
    assert plan_notices(10, 0, None, RULES) == NoticePlan(4, True)
    assert plan_notices(3, 3, NOW - timedelta(minutes=3), RULES) == NoticePlan(1, True)
    assert plan_notices(2, 4, NOW - timedelta(minutes=3), RULES) == NoticePlan(0, True)


def test_with_the_window_full_notices_wait_for_its_oldest_send_to_leave_it() -> None:
    oldest = NOW - timedelta(minutes=11)
    assert plan_notices(6, 5, oldest, RULES) == NoticePlan(0, False, oldest + timedelta(minutes=15))


def test_no_supervisor_notice_is_ever_dropped() -> None:
    """Every due notice is either sent singly, folded into the digest, or held."""
    for due in range(1, 30):
        for sends in range(0, 8):
            plan = plan_notices(due, sends, NOW - timedelta(minutes=1), RULES)
            assert plan.singles <= due
            handled = plan.singles + (due - plan.singles if plan.digest else 0)
            assert handled == due or (plan.hold_until is not None and plan.singles == 0)
            assert sends + plan.singles + plan.digest <= max(RULES.notices_per_window, sends)


POLICY = RetryPolicy(max_attempts=3, first_delay=1.0, max_delay=10.0)


def test_transient_errors_back_off_then_fail_permanent_ones_fail_at_once() -> None:
    assert after_send(Transient("http_500"), 1, POLICY, 1.0) == RetryIn(1.0)
    assert after_send(Transient("http_500"), 2, POLICY, 0.5) == RetryIn(1.0)
    assert after_send(Transient("http_429", retry_after=7), 1, POLICY, 1.0) == RetryIn(7)
    assert after_send(Transient("http_500"), 3, POLICY, 1.0) == Fail(PageFailure.PROVIDER_ERROR)
    invalid = Permanent(PageFailure.INVALID_DESTINATION, "21211")
    assert after_send(invalid, 1, POLICY, 1.0) == Fail(PageFailure.INVALID_DESTINATION)
    assert after_send(Accepted("SM1"), 1, POLICY, 1.0) == MarkSent("SM1", False)


def test_with_a_deadline_transient_errors_are_retried_until_it_whatever_the_attempts() -> None:
    """Found by a new user (#12 F1): five tries in six seconds, then a page given up,
    through a 30 s provider outage."""
    outage = Transient("http_503:20500")
    assert after_send(outage, 40, POLICY, 1.0, retry_for=30.0) == RetryIn(10.0)
    assert after_send(outage, 3, POLICY, 1.0, retry_for=0.5) == Fail(PageFailure.PROVIDER_ERROR)
    assert after_send(outage, 1, POLICY, 1.0, retry_for=-5.0) == RetryIn(1.0)
    slow_down = Transient("http_429", retry_after=7)
    assert after_send(slow_down, 9, POLICY, 1.0, retry_for=8.0) == RetryIn(7)
    invalid = Permanent(PageFailure.INVALID_DESTINATION, "21211", never_deliverable=True)
    assert after_send(invalid, 1, POLICY, 1.0, retry_for=30.0) == Fail(
        PageFailure.INVALID_DESTINATION
    )


def test_a_lost_send_is_looked_up_never_resent_on_the_same_channel() -> None:
    assert after_send(Ambiguous("ReadTimeout"), 1, POLICY, 1.0) == Reconcile()
    assert after_lookup(Found("SM1", delivered=True)) == MarkSent("SM1", True)
    assert after_lookup(NotFound()) == Fail(PageFailure.PROVIDER_ERROR)
    assert after_lookup(Unknowable()) == Fail(PageFailure.NOT_DELIVERED)


def test_a_lookup_that_finds_another_messages_text_has_not_found_this_one() -> None:
    """Two identical texts to one phone (a fresh-eyes operator's restarts): the provider's
    match for the lost one was the earlier one's. Taking its id broke the unique index and
    stopped every send behind it; it is a send not found."""
    found = Found("SM-earlier", delivered=True)
    assert after_lookup(found, held_elsewhere=True) == Fail(PageFailure.PROVIDER_ERROR)
    assert after_lookup(found, held_elsewhere=False) == MarkSent("SM-earlier", True)
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


def test_a_public_url_too_long_for_one_segment_pages_is_refused_at_start_up() -> None:
    """Found by a new user (#12 F6): a 56-character NOTIFY_PUBLIC_URL made every offer SMS
    180 characters, two segments, and notify started without a word."""
    longest = "https://" + "h" * 29  # 37 characters: the most that fits
    settings = NotifySettings(
        database_url="postgresql://x/y",
        notify_link_secret="s",
        notify_delivery="sandbox",
        notify_public_url=longest + "/",
    )
    link = f"{longest}/p/{LinkSigner('s').token(uuid4())}"
    page = content.offer("Miriam Hospital ED", Urgency.EMERGENT, link, "ZW")  # longest code
    assert len(page.text) <= content.SMS_SEGMENT
    assert link in page.text
    assert settings.notify_public_url == longest + "/"

    production_like = "https://handoff-notify.peer-recovery-network.example.org"
    with pytest.raises(ValidationError, match="NOTIFY_PUBLIC_URL is 56 characters; at most 37"):
        NotifySettings(
            database_url="postgresql://x/y",
            notify_link_secret="s",
            notify_delivery="sandbox",
            notify_public_url=production_like,
        )


def _live(supervisor_phone: str | None = None) -> NotifySettings:
    return NotifySettings(
        database_url="postgresql://x/y",
        notify_link_secret="s",
        follow_up_link_secret="f",
        twilio_account_sid="AC1",
        twilio_auth_token="t",
        twilio_from_number="+14105550100",
        smtp_host="127.0.0.1",
        webhook_secret="w",
        notify_supervisor_phone=supervisor_phone,
    )


def test_live_paging_without_a_supervisor_line_warns_at_start_up() -> None:
    """Issue #12: HELP had no supervisor line and nothing said so."""
    [warning] = _live().start_up_warnings()
    assert "NOTIFY_SUPERVISOR_PHONE" in warning
    assert _live("+14105550199").start_up_warnings() == []


def test_the_demo_gives_help_the_demo_rosters_supervisor_line() -> None:
    root = Path(__file__).resolve().parents[2]
    run = (root / "scripts/run.sh").read_text()
    found = re.search(r'NOTIFY_SUPERVISOR_PHONE="\$\{NOTIFY_SUPERVISOR_PHONE:-(\+\d+)\}"', run)
    assert found, "scripts/run.sh sets no NOTIFY_SUPERVISOR_PHONE"
    roster = json.loads((root / "deploy/demo/roster.json").read_text())
    phones = {
        method["destination"]: coach["display_name"]
        for coach in roster["coaches"]
        for method in coach["contact_methods"]
    }
    assert phones[found[1]] == "Rita O."
