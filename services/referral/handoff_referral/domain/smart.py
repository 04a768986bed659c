"""SMART Backend Services rules: the client's signed assertion, its JWKS, and `system/` scopes.

A hospital's system asks for an access token with a JWT it signed with its private key
(`private_key_jwt`, RFC 7523). Everything here is computation on what the request and the
client's registration carry; the caller does the I/O (finding the client, recording the
assertion's `jti`, storing the token).
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from handoff_referral.domain.intake import storable_text

ALGORITHMS = ("RS384", "ES384")
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
# Clocks of hospital systems and of Handoff differ a little; not by more than this.
CLOCK_SKEW = timedelta(seconds=30)
ACCESS_TOKEN_LIFETIME = timedelta(minutes=5)

# What a FHIR client may do, per resource: c create, r read, u update, d delete, s search.
GRANTABLE: Mapping[str, frozenset[str]] = {
    "ServiceRequest": frozenset("c"),
    "Task": frozenset("crus"),
}
_V1_ACTIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^system/(?P<resource>[A-Za-z]+|\*)\.(?P<actions>read|write|\*|[cruds]+)$")


class AssertionRefused(Exception):
    """The client assertion cannot be trusted; `reason` is a short code for logs and metrics
    (never the assertion itself), the message says why for the client."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidJwks(ValueError):
    """A key set a site tried to register is unusable."""


@dataclass(frozen=True)
class VerifiedAssertion:
    """A client assertion whose signature and claims held, expiring at `expires_at` (UTC).
    Its `jti` must be kept until `remember_until`: the assertion is taken for the clock
    skew past its expiry, and must not be taken twice then either."""

    client_id: str
    jti: str
    expires_at: datetime

    @property
    def remember_until(self) -> datetime:
        return self.expires_at + CLOCK_SKEW


def asserted_client_id(assertion: str) -> str:
    """The `iss` of an assertion, read before it is verified, to find the client's keys.

    Raises AssertionRefused if it is not a compact JWS with a string `iss`.
    """
    try:
        decoded = json.loads(jws.extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError, UnicodeError):
        raise AssertionRefused("malformed", "client_assertion is not a signed JWT") from None
    issuer = decoded.get("iss") if isinstance(decoded, dict) else None
    if not isinstance(issuer, str) or not 0 < len(issuer) <= 255 or not storable_text(issuer):
        raise AssertionRefused("malformed", "client_assertion has no usable iss")
    return issuer


def verify_assertion(
    assertion: str, jwks: Mapping[str, Any], client_id: str, audience: str, now: datetime
) -> VerifiedAssertion:
    """Check a client assertion against the client's registered public keys.

    `audience` is the token endpoint's URL; `now` is UTC. The assertion must be signed
    RS384 or ES384 by the key its `kid` names, have `iss` = `sub` = `client_id`,
    `aud` = `audience`, an `exp` in the future but at most 5 minutes away, `nbf` and `iat`
    (when given) not in the future (RFC 7523 §3), each with CLOCK_SKEW (30 s) of leeway, and a
    `jti`. Raises AssertionRefused saying which rule failed.
    """
    try:
        header = jws.extract_compact(assertion.encode()).headers()
    except (JoseError, ValueError, UnicodeError):
        raise AssertionRefused("malformed", "client_assertion is not a signed JWT") from None
    if header.get("alg") not in ALGORITHMS:
        raise AssertionRefused("unsupported_alg", "client_assertion must be signed RS384 or ES384")
    kid = header.get("kid")
    keys = load_public_jwks(jwks)
    if not isinstance(kid, str) or all(key.kid != kid for key in keys.keys):
        raise AssertionRefused("unknown_kid", "no registered key has the assertion's kid")
    try:
        claims = jwt.decode(assertion, keys, algorithms=list(ALGORITHMS)).claims
    except (JoseError, ValueError):
        raise AssertionRefused("bad_signature", "client_assertion signature is invalid") from None
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRefused("wrong_issuer", "iss and sub must both be the client_id")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise AssertionRefused("wrong_audience", f"aud must be {audience}")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AssertionRefused("no_exp", "client_assertion needs a numeric exp")
    try:
        expires_at = datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise AssertionRefused("far_future", "exp is too far in the future") from None
    if expires_at <= now - CLOCK_SKEW:
        raise AssertionRefused("expired", "client_assertion has expired")
    if expires_at > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise AssertionRefused("far_future", "exp may be at most 5 minutes ahead")
    for claim in ("nbf", "iat"):
        moment = claims.get(claim)
        if moment is None:
            continue
        if not isinstance(moment, int | float) or isinstance(moment, bool):
            raise AssertionRefused(f"bad_{claim}", f"{claim} must be a number of seconds")
        if moment > (now + CLOCK_SKEW).timestamp():
            raise AssertionRefused(
                "not_yet_valid", f"{claim} is in the future (30 s of clock skew allowed)"
            )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 255 or not storable_text(jti):
        raise AssertionRefused("no_jti", "client_assertion needs a jti")
    return VerifiedAssertion(client_id=client_id, jti=jti, expires_at=expires_at)


def load_public_jwks(jwks: Mapping[str, Any]) -> KeySet:
    """A registered key set as joserfc keys: RSA (2048 bits or more) and EC P-384 public
    keys, each with a `kid`. Raises InvalidJwks naming what is wrong, including a private
    key sent by mistake: only public keys are ever registered."""
    raw_keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(raw_keys, list) or not raw_keys:
        raise InvalidJwks("a JWKS is an object with a non-empty `keys` list")
    for index, raw in enumerate(raw_keys):
        if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str) or not raw["kid"]:
            raise InvalidJwks(f"keys[{index}] needs a kid")
        if "d" in raw:
            raise InvalidJwks(f"keys[{index}] is a private key; register only public keys")
        if raw.get("kty") not in ("RSA", "EC") or (
            raw.get("kty") == "EC" and raw.get("crv") != "P-384"
        ):
            raise InvalidJwks(f"keys[{index}] must be an RSA key or an EC P-384 key")
    try:
        keys = KeySet.import_key_set({"keys": raw_keys})
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidJwks("the JWKS does not hold valid keys") from None
    for index, key in enumerate(keys.keys):
        if isinstance(key, RSAKey) and key.raw_value.key_size < 2048:
            raise InvalidJwks(f"keys[{index}] is an RSA key under 2048 bits")
        if not isinstance(key, RSAKey | ECKey):
            raise InvalidJwks(f"keys[{index}] must be an RSA key or an EC P-384 key")
    return keys


def granted_scopes(requested: str) -> tuple[str, ...]:
    """The `system/` scopes of a space-separated request that Handoff grants, in the order
    asked: SMART v1 (`system/Task.read`, `.write`, `.*`) and v2 (`system/Task.rs`, `.cu`…)
    forms, each narrowed to what Handoff serves (ServiceRequest create; Task create, read,
    update, search). Scopes it does not know are left out, not refused."""
    granted: list[str] = []
    for scope in requested.split():
        match = _SCOPE.match(scope)
        if match is None or scope in granted:
            continue
        resources = GRANTABLE if match["resource"] == "*" else [match["resource"]]
        asked = set(_V1_ACTIONS.get(match["actions"], match["actions"]))
        if any(asked & GRANTABLE.get(resource, frozenset()) for resource in resources):
            granted.append(scope)
    return tuple(granted)


def permits(scopes: Iterable[str], resource: str, action: str) -> bool:
    """Whether granted `scopes` allow `action` (one of c r u d s) on `resource`."""
    for scope in scopes:
        match = _SCOPE.match(scope)
        if match is None or match["resource"] not in (resource, "*"):
            continue
        if action in _V1_ACTIONS.get(match["actions"], match["actions"]):
            return action in GRANTABLE.get(resource, frozenset())
    return False
