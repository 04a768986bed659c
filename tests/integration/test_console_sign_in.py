"""Signing in to the console, in process over its real database: the sign-in form's CSRF
token, the session cookie's flags, and the optional TOTP code that signs in once."""

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import asyncpg
import httpx
import pyotp
import pytest

from handoff_console.adapters import accounts
from handoff_console.adapters.services import Endpoint, Services
from handoff_console.app import console_app
from handoff_console.domain.access import Role
from handoff_console.entrypoints.web import Console, templates
from handoff_console.settings import ConsoleSettings
from handoff_platform.database import create_pool
from tests.integration.conftest import create_database

PASSWORD = "a long enough passphrase"
NOWHERE = "http://127.0.0.1:9"  # signing in asks no service anything


@pytest.fixture
async def console(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool]]:
    url = await create_database(database_url)
    await accounts.apply_migrations(url)
    pool = await create_pool(url, max_size=2)
    settings = ConsoleSettings(database_url=url)  # secure cookies, as in production
    async with httpx.AsyncClient() as upstream:
        services = Services.over(
            upstream, *(Endpoint(s, NOWHERE, None) for s in ("referral", "matching", "notify"))
        )
        app = console_app(Console(pool, services, settings, templates()))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://console") as client:
            yield client, pool
    await pool.close()


async def _form_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/sign-in")
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def test_signing_in_needs_the_forms_token_and_gives_a_strict_session_cookie(
    console: tuple[httpx.AsyncClient, asyncpg.Pool],
) -> None:
    client, pool = console
    async with pool.acquire() as connection:
        await accounts.add_account(connection, "dana", "Dana", PASSWORD, Role.COORDINATOR, ["MD"])

    answer = await client.post("/sign-in", data={"username": "dana", "password": PASSWORD})
    assert answer.status_code == 403, "no token: a sign-in posted from another site"

    token = await _form_token(client)
    wrong = {"username": "dana", "password": "not it", "csrf_token": token}
    answer = await client.post("/sign-in", data=wrong)
    assert answer.status_code == 401
    assert "Wrong username, password or code." in answer.text

    right = {"username": "dana", "password": PASSWORD, "csrf_token": token}
    answer = await client.post("/sign-in", data=right)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("handoff_console_session=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM console.sessions") == 1


async def test_an_account_with_totp_signs_in_only_with_a_fresh_code(
    console: tuple[httpx.AsyncClient, asyncpg.Pool],
) -> None:
    client, pool = console
    async with pool.acquire() as connection:
        await accounts.add_account(connection, "eli", "Eli", PASSWORD, Role.SUPERVISOR, ["VT"])
        uri = await accounts.enable_totp(connection, "eli")
    assert uri is not None
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    code = pyotp.TOTP(secret).at(datetime.now(UTC))

    token = await _form_token(client)
    form = {"username": "eli", "password": PASSWORD, "csrf_token": token}
    assert (await client.post("/sign-in", data=form)).status_code == 401, "no code"
    bad = "000000" if code != "000000" else "111111"
    assert (await client.post("/sign-in", data=form | {"code": bad})).status_code == 401
    assert (await client.post("/sign-in", data=form | {"code": code})).status_code == 303
    form["csrf_token"] = await _form_token(client)  # a new sign-in form
    replayed = await client.post("/sign-in", data=form | {"code": code})
    assert replayed.status_code == 401, "a code signs in once"
