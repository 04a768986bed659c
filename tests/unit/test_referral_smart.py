"""SMART Backend Services rules (handoff_referral.domain.smart): assertions, keys, scopes."""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from handoff_referral.domain.smart import (
    AssertionRefused,
    InvalidJwks,
    asserted_client_id,
    granted_scopes,
    load_public_jwks,
    permits,
    verify_assertion,
)
from tests.support.fhir import ClientKeys

AUD = "https://handoff.example/fhir/r4/token"
KEYS = ClientKeys()


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_well_formed_assertion_is_verified(alg: str) -> None:
    assertion = KEYS.assertion("client-1", AUD, alg=alg, jti="j-1", expires_in=200)
    verified = verify_assertion(assertion, KEYS.public_jwks(), "client-1", AUD, _now())
    assert (verified.client_id, verified.jti) == ("client-1", "j-1")
    assert _now() + timedelta(seconds=190) < verified.expires_at <= _now() + timedelta(seconds=201)
    # Taken up to 30 s past exp (clock skew), so its jti is kept that long too.
    assert verified.remember_until == verified.expires_at + timedelta(seconds=30)
    late = KEYS.assertion("client-1", AUD, expires_in=-20)
    assert verify_assertion(late, KEYS.public_jwks(), "client-1", AUD, _now()).jti
    assert asserted_client_id(assertion) == "client-1"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: KEYS.assertion("client-1", AUD, expires_in=-60), "expired"),
        (lambda: KEYS.assertion("client-1", AUD, expires_in=400), "far_future"),
        (lambda: KEYS.assertion("client-1", "https://other.example/token"), "wrong_audience"),
        (lambda: KEYS.assertion("client-2", AUD), "wrong_issuer"),
        (lambda: KEYS.assertion("client-1", AUD, kid="nope"), "unknown_kid"),
        (lambda: ClientKeys().assertion("client-1", AUD), "bad_signature"),
        (lambda: "not.a.jwt", "malformed"),
        (
            lambda: jwt.encode(
                {"alg": "HS256", "kid": "rsa-1"}, {"iss": "client-1"}, OctKey.generate_key(256)
            ),
            "unsupported_alg",
        ),
        (
            lambda: jwt.encode(
                {"alg": "RS256", "kid": "rsa-1"},
                {"iss": "client-1", "sub": "client-1", "aud": AUD, "exp": int(time.time()) + 60},
                KEYS.rsa,
            ),
            "unsupported_alg",
        ),
    ],
)
def test_untrustworthy_assertions_are_refused_with_a_reason(
    make: Callable[[], str], reason: str
) -> None:
    with pytest.raises(AssertionRefused) as refused:
        verify_assertion(make(), KEYS.public_jwks(), "client-1", AUD, _now())
    assert refused.value.reason == reason


def test_an_assertion_without_jti_is_refused() -> None:
    claims = {"iss": "c", "sub": "c", "aud": AUD, "exp": int(time.time()) + 60}
    token = jwt.encode({"alg": "ES384", "kid": "ec-1"}, claims, KEYS.ec, algorithms=["ES384"])
    with pytest.raises(AssertionRefused) as refused:
        verify_assertion(token, KEYS.public_jwks(), "c", AUD, _now())
    assert refused.value.reason == "no_jti"


@pytest.mark.filterwarnings("ignore:Key size should be")  # the weak key is the point
def test_registered_key_sets_hold_only_usable_public_keys() -> None:
    assert [k.kid for k in load_public_jwks(KEYS.public_jwks()).keys] == ["rsa-1", "ec-1"]
    private = {"keys": [KEYS.rsa.as_dict(private=True)]}
    weak_rsa = RSAKey.generate_key(1024, parameters={"kid": "weak"}, private=False)
    p256 = ECKey.generate_key("P-256", parameters={"kid": "p256"})
    no_kid = RSAKey.generate_key(2048)
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "keys"),
        ({"keys": []}, "keys"),
        (private, "private"),
        ({"keys": [weak_rsa.as_dict(private=False)]}, "2048"),
        ({"keys": [p256.as_dict(private=False)]}, "P-384"),
        ({"keys": [no_kid.as_dict(private=False)]}, "kid"),
        ({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}, "RSA"),
    ]
    for jwks, complaint in cases:
        with pytest.raises(InvalidJwks, match=complaint):
            load_public_jwks(jwks)


def test_scopes_in_smart_v1_and_v2_forms_are_granted_as_far_as_handoff_serves() -> None:
    asked = (
        "system/ServiceRequest.write system/Task.read system/Task.cu system/Patient.read "
        "user/Task.read openid system/Task.read"
    )
    assert granted_scopes(asked) == (
        "system/ServiceRequest.write",
        "system/Task.read",
        "system/Task.cu",
    )
    assert granted_scopes("system/*.*") == ("system/*.*",)
    assert granted_scopes("system/Patient.rs launch") == ()


@pytest.mark.parametrize(
    ("scopes", "resource", "action", "allowed"),
    [
        (["system/ServiceRequest.write"], "ServiceRequest", "c", True),
        (["system/ServiceRequest.c"], "ServiceRequest", "c", True),
        (["system/Task.read"], "Task", "r", True),
        (["system/Task.read"], "Task", "s", True),
        (["system/Task.read"], "Task", "u", False),
        (["system/Task.rs"], "Task", "c", False),
        (["system/Task.write"], "Task", "u", True),
        (["system/Task.cu"], "Task", "c", True),
        (["system/*.*"], "Task", "u", True),
        (["system/*.*"], "ServiceRequest", "r", False),
        (["system/Task.*"], "ServiceRequest", "c", False),
    ],
)
def test_permissions_follow_the_granted_scopes(
    scopes: list[str], resource: str, action: str, allowed: bool
) -> None:
    assert permits(scopes, resource, action) is allowed


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_an_assertion_not_yet_valid_is_refused_beyond_30_s_of_clock_skew(claim: str) -> None:
    def signed(ahead: int) -> str:
        claims = {
            "iss": "c",
            "sub": "c",
            "aud": AUD,
            "exp": int(time.time()) + 120,
            "jti": f"j-{claim}-{ahead}",
            claim: int(time.time()) + ahead,
        }
        header = {"alg": "ES384", "kid": "ec-1"}
        return jwt.encode(header, claims, KEYS.ec, algorithms=["ES384"])

    with pytest.raises(AssertionRefused) as refused:
        verify_assertion(signed(3600), KEYS.public_jwks(), "c", AUD, _now())
    assert refused.value.reason == "not_yet_valid"
    assert claim in str(refused.value)
    with pytest.raises(AssertionRefused):
        verify_assertion(signed(45), KEYS.public_jwks(), "c", AUD, _now())
    # A clock a little ahead of Handoff's is no reason to refuse.
    assert verify_assertion(signed(20), KEYS.public_jwks(), "c", AUD, _now()).jti
