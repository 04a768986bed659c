"""The console's authorization rules and CSRF check (decision 0023)."""

import uuid
from collections.abc import Iterable
from datetime import date

import pytest

from handoff_console.domain.access import (
    Account,
    PoolRef,
    Role,
    certified_in,
    csrf_matches,
    may_change_dispatch,
    may_change_pool,
    may_view_pool,
    may_view_site,
    new_token,
)

SITES = {"md-mercy": "MD", "md-hopkins": "MD", "vt-green": "VT", "ri-bay": "RI"}


def account(role: Role, states: Iterable[str] = (), sites: Iterable[str] = ()) -> Account:
    return Account(uuid.uuid4(), "someone", "Someone", role, frozenset(states), frozenset(sites))


def test_a_state_in_scope_shows_every_site_of_the_state_and_no_other() -> None:
    md = account(Role.COORDINATOR, {"MD"})
    assert may_view_site(md, "md-mercy", "MD")
    assert may_view_site(md, "md-hopkins", "MD")
    assert not may_view_site(md, "vt-green", "VT")
    assert may_view_pool(md, PoolRef("state", "MD"), SITES)
    assert not may_view_pool(md, PoolRef("state", "VT"), SITES)
    assert not may_view_pool(md, PoolRef("site", "vt-green"), SITES)


def test_a_site_in_scope_shows_that_site_and_its_state_pool_but_changes_only_the_site() -> None:
    mercy = account(Role.COORDINATOR, sites={"md-mercy"})
    assert may_view_site(mercy, "md-mercy", "MD")
    assert not may_view_site(mercy, "md-hopkins", "MD")
    assert may_view_pool(mercy, PoolRef("state", "MD"), SITES)
    assert may_change_pool(mercy, PoolRef("site", "md-mercy"), SITES)
    assert not may_change_pool(mercy, PoolRef("state", "MD"), SITES), "a pool serving others"
    assert not may_change_pool(mercy, PoolRef("site", "md-hopkins"), SITES)


def test_an_unknown_site_is_never_in_scope() -> None:
    md = account(Role.SUPERVISOR, {"MD"})
    assert not may_view_pool(md, PoolRef("site", "md-unknown"), SITES)
    assert not may_change_pool(md, PoolRef("site", "md-unknown"), SITES)


@pytest.mark.parametrize(
    ("role", "schedules", "dispatch"),
    [
        (Role.READ_ONLY, False, False),
        (Role.COORDINATOR, True, False),
        (Role.SUPERVISOR, True, True),
    ],
)
def test_what_each_role_may_change(role: Role, schedules: bool, dispatch: bool) -> None:
    md = account(role, {"MD"})
    assert may_change_pool(md, PoolRef("site", "md-mercy"), SITES) is schedules
    assert may_change_pool(md, PoolRef("state", "MD"), SITES) is schedules
    assert may_change_dispatch(md, "md-mercy", "MD") is dispatch
    assert md.changes_anything is (role is not Role.READ_ONLY)
    assert not may_change_dispatch(md, "vt-green", "VT"), "never outside the scope"


@pytest.mark.parametrize("name", ["site:md-mercy", "state:MD"])
def test_pool_names_read_back(name: str) -> None:
    assert PoolRef.parse(name).name == name


@pytest.mark.parametrize(
    "name", ["", "site:", "state:md", "state:MDX", "county:MD", "site:MD-MERCY", "site:a/b"]
)
def test_anything_else_is_not_a_pool(name: str) -> None:
    with pytest.raises(ValueError, match="not a pool"):
        PoolRef.parse(name)


def test_the_csrf_token_must_be_the_sessions_own() -> None:
    token = new_token()
    assert csrf_matches(token, token)
    assert not csrf_matches(token, new_token())
    assert not csrf_matches(token, None)
    assert not csrf_matches(token, "")
    assert not csrf_matches("", ""), "a session without a token accepts nothing"
    assert not csrf_matches(token, token[:-1])


def test_tokens_are_fresh_and_long() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 43 for t in tokens)  # 256 bits in URL-safe base64


def test_the_forms_offer_only_coaches_certified_in_the_pools_state_today() -> None:
    """A new coordinator could pick a Vermont-only coach for a Maryland rota."""
    coaches = [
        {"coach_id": "md", "certifications": [{"state": "MD", "expires_on": "2030-01-01"}]},
        {"coach_id": "vt", "certifications": [{"state": "VT", "expires_on": "2030-01-01"}]},
        {"coach_id": "lapsed", "certifications": [{"state": "MD", "expires_on": "2026-11-30"}]},
        {"coach_id": "both", "certifications": [
            {"state": "VT", "expires_on": "2030-01-01"},
            {"state": "MD", "expires_on": "2026-12-01"},
        ]},
    ]  # fmt: skip
    offered = certified_in(coaches, "MD", date(2026, 12, 1))
    assert [c["coach_id"] for c in offered] == ["md", "both"]
