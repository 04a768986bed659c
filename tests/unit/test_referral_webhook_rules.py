"""Status webhooks: the body, its Standard Webhooks signature, the retry schedule, the URL."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from handoff_referral.domain.webhooks import (
    BadCallbackUrl,
    RetryPolicy,
    StatusStep,
    check_callback_url,
    new_secret,
    signed_headers,
)

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
STEP = StatusStep(
    delivery_id=uuid.uuid4(),
    referral_id=uuid.uuid4(),
    external_id="ORD-5521",
    step="accepted",
    status="accepted",
    at=NOW,
)


def test_the_body_carries_the_step_and_nothing_about_the_patient() -> None:
    payload = json.loads(STEP.body())
    assert payload == {
        "type": "referral.step",
        "timestamp": "2026-12-01T03:00:00Z",
        "data": {
            "referral_id": str(STEP.referral_id),
            "external_id": "ORD-5521",
            "step": "accepted",
            "status": "accepted",
            "at": "2026-12-01T03:00:00Z",
        },
    }


def test_a_receiver_with_the_secret_verifies_and_any_change_to_the_body_fails() -> None:
    secret = new_secret()
    sent_at = datetime.now(UTC)
    headers = signed_headers(STEP.delivery_id, STEP.body(), sent_at, [secret])
    assert headers["webhook-id"] == str(STEP.delivery_id)
    assert headers["webhook-timestamp"] == str(int(sent_at.timestamp()))
    assert Webhook(secret).verify(STEP.body(), headers)["data"]["step"] == "accepted"

    tampered = STEP.body().replace(b'"step":"accepted"', b'"step":"completed"')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(STEP.body(), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(STEP.body(), headers | {"webhook-id": str(uuid.uuid4())})


def test_during_a_rotation_both_the_new_and_the_old_secret_verify() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers(STEP.delivery_id, STEP.body(), datetime.now(UTC), [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(STEP.body(), headers)


def test_secrets_are_standard_webhooks_secrets_and_never_repeat() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(s.startswith("whsec_") and len(s) == 6 + 44 for s in secrets)


def test_retries_double_from_the_initial_wait_up_to_the_maximum() -> None:
    policy = RetryPolicy(initial=5, maximum=3600, window=24 * 3600)
    waits = [policy.delay(n, jitter=0.999999).total_seconds() for n in range(1, 13)]
    assert [round(w) for w in waits] == [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert policy.delay(3, jitter=0.0).total_seconds() == pytest.approx(16.0)  # 80 % of 20


def test_a_delivery_is_failed_once_its_24_hours_have_passed() -> None:
    policy = RetryPolicy()
    due = NOW
    assert policy.next_attempt(1, due + timedelta(seconds=1), due, 0.5) is not None
    last_chance = policy.next_attempt(30, due + timedelta(hours=23, minutes=59), due, 0.5)
    assert last_chance == due + timedelta(hours=24)  # never scheduled past the window
    assert policy.next_attempt(31, due + timedelta(hours=24), due, 0.5) is None


@pytest.mark.parametrize(
    ("url", "https_only", "why"),
    [
        ("ftp://ehr.example/hook", False, "must start with"),
        ("http://ehr.example/hook", True, "must start with https"),
        ("https:///hook", False, "no host"),
        ("https://user:pw@ehr.example/hook", False, "user name or password"),
        ("https://ehr.example/hook#x", False, "fragment"),
        ("https://ehr.example/" + "a" * 2048, False, "longer than 2048"),
        # fresh34b: each of these was stored, or was a 500, and could never be delivered
        ("https://ehr.example/\x00", False, "control or non-ASCII"),
        ("https://ehr.example/a\nb", False, "control or non-ASCII"),
        ("https://e hr.example/", False, "control or non-ASCII"),
        ("https://ehr.example/\u202e", False, "control or non-ASCII"),
        ("https://[::1/", False, "Invalid IPv6 URL"),
        ("https://ehr.example:99999/", False, "Port out of range"),
        ("https://ehr.example:0/", False, "port must be 1-65535"),
        ("https://-.example/", False, "no DNS name"),
        ("https://a..b/", False, "no DNS name"),
        ("https://127.0.0.1:8701/metrics", True, "this machine"),
        ("https://localhost/hook", True, "this machine"),
        ("https://169.254.169.254/latest/meta-data", True, "link-local"),
        # fresh34d: each of these was stored, and reached this machine or failed for ever
        ("https://[v1.x]/", False, "cannot be read"),
        ("https://xn--zz.org/", False, "cannot be read"),
        ("https://999.1.1.1/", False, "cannot be read"),
        ("https://1.2.3/", False, "dotted-quad"),
        ("https://127.1:9443/", True, "dotted-quad"),
        ("https://2130706433/", True, "dotted-quad"),
        ("https://0x7f.1/", True, "dotted-quad"),
        ("https://0177.0.0.1/", True, "cannot be read"),
        ("https://[::ffff:127.0.0.1]/", True, "this machine"),
        ("https://[::ffff:169.254.169.254]/", True, "link-local"),
        # fresh34e: a trailing dot, a name under localhost, an IPv4-compatible address
        ("https://127.1./", True, "dotted-quad"),
        ("https://2130706433./", True, "dotted-quad"),
        ("https://localhost./", True, "this machine"),
        ("https://a.localhost/", True, "this machine"),
        ("https://[::127.0.0.1]/", True, "this machine"),
    ],
)
def test_unusable_callback_urls_are_refused_saying_why(
    url: str, https_only: bool, why: str
) -> None:
    with pytest.raises(BadCallbackUrl, match=why):
        check_callback_url(url, https_only)


def test_usable_callback_urls_are_kept_as_given() -> None:
    url = "https://ehr.example:8443/handoff/status?source=handoff"
    assert check_callback_url(url, https_only=True) == url
    assert check_callback_url("http://127.0.0.1:9000/hook", https_only=False)
    assert check_callback_url("https://10.20.0.7:8443/hook", https_only=True)  # a hospital LAN
    assert check_callback_url("https://[2001:db8::7]/hook", https_only=True)
    assert check_callback_url("https://mirth_prod.ehr.example/hook", https_only=True)
