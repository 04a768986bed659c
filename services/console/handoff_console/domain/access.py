"""Who may see and change what in the console: roles scoped to sites or whole states, and
the CSRF rule. Pure: no I/O.

- **read_only** sees what is in scope and changes nothing;
- **coordinator** also changes schedules (rotations, layers, overrides, temporary
  schedules) of the pools in scope;
- **supervisor** also changes sites' dispatch settings.

A site is in scope if its state is one of the account's states or it is one of the
account's sites. A state pool is seen by anyone with a site in that state in scope, and
changed only with the whole state in scope (a state pool serves every site of the state).
"""

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any
from uuid import UUID


class Role(StrEnum):
    COORDINATOR = "coordinator"
    SUPERVISOR = "supervisor"
    READ_ONLY = "read_only"


@dataclass(frozen=True)
class Account:
    """A person signed in: `states` are USPS codes, `sites` site ids."""

    account_id: UUID
    username: str
    display_name: str
    role: Role
    states: frozenset[str] = field(default_factory=frozenset)
    sites: frozenset[str] = field(default_factory=frozenset)

    @property
    def changes_anything(self) -> bool:
        return self.role is not Role.READ_ONLY


@dataclass(frozen=True)
class PoolRef:
    """A schedule pool as the services name it: `site:<id>` or `state:<USPS>`."""

    kind: str  # "site" or "state"
    key: str

    @classmethod
    def parse(cls, name: str) -> "PoolRef":
        """Raises ValueError for anything but `site:<id>` or `state:<XX>`."""
        kind, _, key = name.partition(":")
        if kind == "site" and key and key.replace("-", "").isalnum() and key.islower():
            return cls(kind, key)
        if kind == "state" and len(key) == 2 and key.isalpha() and key.isupper():
            return cls(kind, key)
        raise ValueError(f"not a pool: {name!r}")

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.key}"


def may_view_site(account: Account, site_id: str, state: str) -> bool:
    """The site is in the account's scope (its state, or the site itself)."""
    return state in account.states or site_id in account.sites


def may_view_pool(account: Account, pool: PoolRef, site_states: Mapping[str, str]) -> bool:
    """`site_states` maps every known site id to its state; an unknown site is not seen."""
    if pool.kind == "site":
        state = site_states.get(pool.key)
        return state is not None and may_view_site(account, pool.key, state)
    return pool.key in account.states or any(
        site_states.get(site) == pool.key for site in account.sites
    )


def may_change_pool(account: Account, pool: PoolRef, site_states: Mapping[str, str]) -> bool:
    """Coordinators and supervisors change schedules of their sites; a state pool only with
    the whole state in scope."""
    if not account.changes_anything:
        return False
    if pool.kind == "state":
        return pool.key in account.states
    return may_view_pool(account, pool, site_states)


def may_change_dispatch(account: Account, site_id: str, state: str) -> bool:
    """Only supervisors change how a site's referrals are dispatched."""
    return account.role is Role.SUPERVISOR and may_view_site(account, site_id, state)


def new_token() -> str:
    """A fresh unguessable token (256 bits, URL-safe): session ids and CSRF tokens."""
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str, given: str | None) -> bool:
    """The form's CSRF token is the session's, compared in constant time; none never is."""
    if not given or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def new_form_token(csrf_token: str) -> str:
    """A one-time token for one rendering of a page's forms: a fresh nonce and its HMAC
    under the session's CSRF token, so only the session's own pages can mint one and the
    console need store nothing until a form is saved."""
    nonce = new_token()
    return f"{nonce}.{_form_mac(csrf_token, nonce)}"


def form_token_nonce(csrf_token: str, given: str | None) -> str | None:
    """The nonce of a form token minted by `new_form_token` for this session; None for a
    missing, malformed or foreign one."""
    if not given or not csrf_token or given.count(".") != 1:
        return None
    nonce, mac = given.split(".")
    if not nonce or not hmac.compare_digest(mac.encode(), _form_mac(csrf_token, nonce).encode()):
        return None
    return nonce


def _form_mac(csrf_token: str, nonce: str) -> str:
    return hmac.new(csrf_token.encode(), nonce.encode(), hashlib.sha256).hexdigest()


def certified_in(coaches: list[dict[str, Any]], state: str, on: date) -> list[dict[str, Any]]:
    """The coaches (as matching's admin API lists them, each with `certifications` of
    `state` and ISO `expires_on`) holding a certification in `state` valid on `on`: the only
    ones matching pages for that state's sites and pool, so the only ones a form offers."""
    return [
        coach
        for coach in coaches
        if any(
            cert["state"] == state and date.fromisoformat(cert["expires_on"]) >= on
            for cert in coach["certifications"]
        )
    ]
