"""`handoff demo …`: demo data for `make run`, and a scripted story through the running system.

`seed` registers the demo emergency departments, their dispatch settings and the
roster, and prints an API key for the first site; run again, it changes nothing
that exists. `play` acts as a hospital and two coaches over HTTP only: it posts a
referral, has the first coach paged decline from their link, the second accept,
arrive and complete, and prints the referral's timeline.
"""

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import httpx
import typer
from pydantic import BaseModel, ConfigDict

from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import apply_migrations as migrate_matching
from handoff_matching.adapters.roster_store import import_roster
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import parse_roster
from handoff_platform.settings import PlatformSettings, settings_or_exit
from handoff_referral.adapters import hl7_store
from handoff_referral.adapters import postgres as referral_store
from handoff_referral.app import apply_migrations as migrate_referral
from handoff_referral.domain.api_keys import issue_key
from handoff_referral.domain.hl7 import Interface
from handoff_referral.domain.referral import Site
from handoff_referral.service import register_site

app = typer.Typer(help="Demo data, and a scripted story.", no_args_is_help=True)

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"
LINK = re.compile(r"https?://\S+/p/[A-Za-z0-9._-]+")  # the offer link in a page body


def demo_referral(external_id: str) -> dict[str, Any]:
    """What an ED's system posts: no patient identity, the least the coach needs."""
    return {
        "external_id": external_id,
        "urgency": "urgent",
        "location": "ED bay 4",
        "callback_phone": "+14105550100",
        "patient": {
            "preferred_language": "en",
            "interpreter_needed": False,
            "substances": ["opioids"],
            "consent": "obtained",
        },
    }


class DemoSite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: str
    name: str
    short_name: str
    state: str
    time_zone: str
    supervisors: list[uuid.UUID]


class DemoSites(BaseModel):
    sites: list[DemoSite]


@app.command("seed")
def seed_command(
    sites: Annotated[Path, typer.Option(exists=True)] = DEMO / "sites.json",
    roster: Annotated[Path, typer.Option(exists=True)] = DEMO / "roster.json",
    interface: Annotated[Path, typer.Option(exists=True)] = DEMO / "mercy-epic.json",
) -> None:
    """Register the demo sites, roster and HL7 interface (README's example: EPIC/MERCY for
    md-mercy, so an engine can send over MLLP at once); print an API key for the first site."""
    demo = DemoSites.model_validate_json(sites.read_text())
    mapping = Interface.model_validate_json(interface.read_text())
    database_url = settings_or_exit(PlatformSettings).database_url
    token = asyncio.run(_seed(database_url, demo, roster.read_text(), mapping))
    typer.echo(token)


async def _seed(database_url: str, demo: DemoSites, roster_json: str, mapping: Interface) -> str:
    await migrate_referral(database_url)
    await migrate_matching(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        for site in demo.sites:
            await register_site(
                connection,
                Site(
                    site_id=site.site_id,
                    name=site.name,
                    short_name=site.short_name,
                    state=site.state,
                    time_zone=site.time_zone,
                ),
            )
            await dispatch_store.put_site_settings(
                connection, site.site_id, DispatchSettings(), True, tuple(site.supervisors)
            )
        summary = await import_roster(connection, parse_roster(roster_json))
        await hl7_store.save_interface(connection, mapping, move=False)
        key = issue_key()
        await referral_store.add_key(connection, demo.sites[0].site_id, key, "demo")
    finally:
        await connection.close()
    typer.echo(
        f"{len(demo.sites)} sites in {len({s.state for s in demo.sites})} states, "
        f"{summary.coaches} coaches, {summary.shifts} shifts, HL7 sender "
        f"{mapping.sending_application}/{mapping.sending_facility} for {mapping.site_id}; "
        f"an API key for {demo.sites[0].site_id}:",
        err=True,
    )
    return key.token


@app.command("play")
def play_command(
    key: Annotated[str, typer.Option(help="The demo hospital's API key.")],
    referral_url: Annotated[str, typer.Option()] = "http://127.0.0.1:8001",
    notify_url: Annotated[str, typer.Option()] = "http://127.0.0.1:8003",
) -> None:
    """A referral arrives; the first coach declines, the second accepts, arrives, completes."""
    asyncio.run(_play(key, referral_url, notify_url))


async def _play(key: str, referral_url: str, notify_url: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=10) as client:
        seen = await _last_message_id(client, notify_url)
        referral = (
            await client.post(
                f"{referral_url}/v1/referrals",
                headers=headers,
                json=demo_referral(f"demo-{uuid.uuid4().hex[:8]}"),
            )
        ).json()
        _say(f"the ED posts referral {referral['id']}: {referral['status']}")
        first, seen = await _next_page(client, notify_url, seen)
        _say(f"{first['to']} is paged: {first['body']!r}")
        await client.post(_link(first), data={"answer": "declined"})
        _say(f"{first['to']} taps Decline")
        second, seen = await _next_page(client, notify_url, seen)
        _say(f"{second['to']} is paged next: {second['body']!r}")
        for answer, button in (
            ("accepted", "Accept"),
            ("arrived", "Arrived"),
            ("completed", "Completed"),
        ):
            await _answer_when_offered(client, _link(second), answer)
            _say(f"{second['to']} taps {button}")
        final = await _status(client, referral_url, headers, referral["id"], "completed")
        _say("the referral's timeline, as the ED reads it:")
        for step in final["timeline"]:
            typer.echo(f"      {step['at']}  {step['status']}")


async def _last_message_id(client: httpx.AsyncClient, notify_url: str) -> int:
    messages = (await client.get(f"{notify_url}/sandbox/messages")).json()["messages"]
    return max((m["id"] for m in messages), default=0)


async def _next_page(
    client: httpx.AsyncClient, notify_url: str, after: int, within: float = 30
) -> tuple[dict[str, Any], int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        messages = (
            await client.get(f"{notify_url}/sandbox/messages", params={"after": after})
        ).json()["messages"]
        for message in messages:
            if LINK.search(message["body"]) and "Reply 1" in message["body"]:
                return message, message["id"]
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no page arrived within {within:.0f} s")


async def _answer_when_offered(client: httpx.AsyncClient, link: str, answer: str) -> None:
    """Tap the button once the page shows it (Arrived appears once matching confirms)."""
    deadline = time.monotonic() + 30
    while f'value="{answer}"' not in (await client.get(link)).text:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the page never offered {answer}")
        await asyncio.sleep(0.2)
    await client.post(link, data={"answer": answer})


async def _status(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], referral_id: str, status: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        found: dict[str, Any] = (
            await client.get(f"{url}/v1/referrals/{referral_id}", headers=headers)
        ).json()
        if found["status"] == status or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def _link(message: dict[str, Any]) -> str:
    found = LINK.search(message["body"])
    assert found is not None
    return found.group(0)


def _say(line: str) -> None:
    typer.echo(f"  ▸ {line}")
