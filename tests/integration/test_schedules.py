"""Schedules on real Kafka and PostgreSQL: a referral goes to the coach a rotation has on
call, before and after a handoff; a coach who texted OFF is not offered the next one and
the coverage report shows the gap at once; calendar feeds and imports over HTTP.

A broker and a database of its own; each test has its own site and coaches.
"""

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaBroker
from icalendar import Calendar

from handoff_devenv import KafkaCluster
from handoff_matching import SCHEMA
from handoff_matching.adapters import dispatch_store
from handoff_matching.adapters.roster_store import apply_migrations, import_roster, remember_site
from handoff_matching.app import MatchingRuntime, MatchingSettings
from handoff_matching.domain.calendars import COACH_PROPERTY
from handoff_matching.domain.dispatch import DispatchSettings
from handoff_matching.roster_file import RosterFile
from handoff_platform.kafka import ensure_topics, make_broker
from handoff_schemas import Envelope, Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    CoachAvailabilityChanged,
    OfferMade,
    ReferralCreated,
    ReferralUnassigned,
    SiteFacts,
)
from handoff_schemas.topics import partition_key
from handoff_schemas.vocabulary import Consent, Substance, UnassignedReason, Urgency
from tests.integration.conftest import create_database
from tests.support.kafka import read_topic, send
from tests.support.waiting import eventually

ADMIN_TOKEN = "coordinator-secret"
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
async def database(database_url: str) -> str:
    created = await create_database(database_url)
    await apply_migrations(created)
    return created


@pytest.fixture(scope="module")
async def matching(database: str, own_kafka: KafkaCluster) -> AsyncIterator[MatchingRuntime]:
    await ensure_topics(own_kafka.bootstrap_servers)
    runtime = await MatchingRuntime.start(
        MatchingSettings(
            database_url=database,
            kafka_bootstrap_servers=own_kafka.bootstrap_servers,
            matching_admin_token=ADMIN_TOKEN,
        )
    )

    async def connected() -> bool:
        return runtime.kafka_connected.is_set()

    await eventually(connected, within=60, what="matching on Kafka")
    yield runtime
    await runtime.stop()


@pytest.fixture(scope="module")
async def stand_in(own_kafka: KafkaCluster) -> AsyncIterator[KafkaBroker]:
    """Publishes as the referral and notify services would."""
    broker = make_broker(own_kafka.bootstrap_servers, client_id="stand-in")
    async with broker:
        yield broker


@pytest.fixture
async def admin(matching: MatchingRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=matching.app),
        base_url="http://matching",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as client:
        yield client


class Site:
    """A site of its own in `state`, with coaches of its own (each with its own phone)."""

    def __init__(self, state: str, coaches: int) -> None:
        self.site_id = f"{state.lower()}-{uuid.uuid4().hex[:8]}"
        self.state = state
        self.coaches = [uuid.uuid4() for _ in range(coaches)]
        self.phones = [f"+1802555{uuid.uuid4().int % 10_000:04d}" for _ in range(coaches)]

    async def register(self, database: str, weekly: bool = False) -> None:
        """Coaches in the roster (around the clock in weekly shifts if `weekly`), the site's
        facts as its registration brings them, and sequential dispatch with no supervisors."""
        roster = RosterFile.model_validate(
            {
                "coaches": [
                    {
                        "coach_id": str(coach_id),
                        "display_name": f"Coach {n} of {self.site_id}",
                        "contact_methods": [{"channel": "sms", "destination": phone}],
                        "languages": ["en"],
                        "max_concurrent": 5,
                        "certifications": [
                            {"state": self.state, "credential": "CPRS", "expires_on": "2030-01-01"}
                        ],
                    }
                    for n, (coach_id, phone) in enumerate(
                        zip(self.coaches, self.phones, strict=True)
                    )
                ],
                "shifts": [
                    {
                        "coach_id": str(coach_id),
                        "pool": f"site:{self.site_id}",
                        "weekday": day,
                        "start": "00:00",
                        "end": "00:00",
                        "time_zone": "America/New_York",
                    }
                    for coach_id in (self.coaches if weekly else [])
                    for day in (
                        "monday",
                        "tuesday",
                        "wednesday",
                        "thursday",
                        "friday",
                        "saturday",
                        "sunday",
                    )
                ],
            }
        )
        connection = await asyncpg.connect(database)
        try:
            await import_roster(connection, roster)
            await remember_site(
                connection, self.site_id, "Test ED", self.state, NEW_YORK.key, datetime.now(UTC)
            )
            await dispatch_store.put_site_settings(
                connection, self.site_id, DispatchSettings(), False, ()
            )
        finally:
            await connection.close()

    def referral(self) -> ReferralCreated:
        return ReferralCreated(
            referral_id=uuid.uuid4(),
            site=SiteFacts(
                site_id=self.site_id, short_name="Test ED", state=self.state, time_zone=NEW_YORK.key
            ),
            urgency=Urgency.URGENT,
            location="ED bay 4",
            callback_phone="+14105550100",
            preferred_language="en",
            interpreter_needed=False,
            substances=frozenset({Substance.OPIOIDS}),
            consent=Consent.OBTAINED,
            received_at=datetime.now(UTC),
        )


async def dispatched(bootstrap: str, referral_id: uuid.UUID, what: str) -> Any:
    """The first event matching published about this referral."""
    key = str(referral_id).encode()

    async def first() -> Any:
        records = await read_topic(bootstrap, Topic.DISPATCH)
        events = [decode_event(r.value).data for r in records if r.key == key]
        return events[0] if events else None

    return await eventually(first, within=30, what=what)


async def on_call_at_site(admin: httpx.AsyncClient, site_id: str) -> list[str]:
    response = await admin.get(f"/v1/admin/sites/{site_id}/on-call")
    assert response.status_code == 200
    on_call: list[str] = response.json()["site"]
    return on_call


async def test_a_referral_goes_to_the_coach_the_rotation_has_on_call_before_and_after_a_handoff(
    matching: MatchingRuntime,
    admin: httpx.AsyncClient,
    stand_in: KafkaBroker,
    database: str,
    own_kafka: KafkaCluster,
) -> None:
    site = Site("MD", 2)
    await site.register(database)
    first, second = site.coaches
    # Hourly shifts, the next handoff 15 s from now: shift 0 (first) began 59 min 45 s ago.
    handoff = (
        (datetime.now(UTC) + timedelta(seconds=15)).astimezone(NEW_YORK).replace(microsecond=0)
    )
    start = handoff - timedelta(hours=1)
    rotation = {
        "pool": f"site:{site.site_id}",
        "name": "hourly",
        "time_zone": NEW_YORK.key,
        "start_date": start.date().isoformat(),
        "handoff": start.time().isoformat(),
        "shift_length": 1,
        "shift_unit": "hours",
        "participants": [str(first), str(second)],
    }
    created = await admin.post("/v1/admin/rotations", json=rotation)
    assert created.status_code == 201, created.text
    listed = (
        await admin.get("/v1/admin/rotations", params={"pool": f"site:{site.site_id}"})
    ).json()
    assert [r["layer_id"] for r in listed] == [created.json()["layer_id"]]
    assert (await admin.post("/v1/admin/rotations", json=rotation)).status_code == 409

    before = await send(stand_in, site.referral())
    offer = await dispatched(own_kafka.bootstrap_servers, before.data.referral_id, "first offer")
    assert isinstance(offer, OfferMade)
    assert datetime.now(UTC) < handoff, "the first referral was dispatched after the handoff"
    assert offer.coach_id == first

    async def handed_over() -> bool:
        return await on_call_at_site(admin, site.site_id) == [str(second)]

    await eventually(handed_over, within=30, what="the handoff to the second coach")
    after = await send(stand_in, site.referral())
    offer = await dispatched(own_kafka.bootstrap_servers, after.data.referral_id, "second offer")
    assert isinstance(offer, OfferMade)
    assert offer.coach_id == second

    schedule = (await admin.get(f"/v1/admin/sites/{site.site_id}/schedule?days=1")).json()
    assert [s["site"] for s in schedule["segments"][:2]] == [[str(second)], [str(first)]]
    assert schedule["segments"][1]["start"] == (handoff + timedelta(hours=1)).astimezone(
        UTC
    ).isoformat().replace("+00:00", "Z")


async def test_a_coach_who_texts_off_is_not_offered_the_next_referral_and_the_gap_shows(
    matching: MatchingRuntime,
    admin: httpx.AsyncClient,
    stand_in: KafkaBroker,
    database: str,
    own_kafka: KafkaCluster,
) -> None:
    site = Site("VT", 1)
    await site.register(database, weekly=True)
    [coach], [phone] = site.coaches, site.phones
    coverage = f"/v1/admin/sites/{site.site_id}/coverage?days=1"
    assert (await admin.get(coverage)).json()["gaps"] == []
    off_at = datetime.now(UTC)
    off = CoachAvailabilityChanged(
        phone=phone, available=False, changed_at=off_at, until=off_at + timedelta(hours=24)
    )
    await _publish(stand_in, off)

    async def off_call() -> bool:
        return await on_call_at_site(admin, site.site_id) == []

    await eventually(off_call, within=30, what="the coach off call")
    report = (await admin.get(coverage)).json()
    [gap] = report["gaps"]
    assert gap["start"] == report["start"]  # the gap is there at once
    assert datetime.fromisoformat(gap["end"]) == off.until  # the site's only coach, off 24 h
    referral = await send(stand_in, site.referral())
    event = await dispatched(own_kafka.bootstrap_servers, referral.data.referral_id, "no offer")
    assert isinstance(event, ReferralUnassigned)
    assert event.reason is UnassignedReason.NOBODY_ON_CALL

    await _publish(
        stand_in,
        CoachAvailabilityChanged(phone=phone, available=True, changed_at=datetime.now(UTC)),
    )

    async def back() -> bool:
        return await on_call_at_site(admin, site.site_id) == [str(coach)]

    await eventually(back, within=30, what="the coach on call again")
    assert (await admin.get(coverage)).json()["gaps"] == []


async def test_calendar_feeds_with_stable_uids_an_import_above_the_rotation_and_a_temporary(
    matching: MatchingRuntime, admin: httpx.AsyncClient, database: str
) -> None:
    site = Site("MD", 2)
    await site.register(database)
    first, second = site.coaches
    today = datetime.now(NEW_YORK).date()
    daily = {
        "pool": f"site:{site.site_id}",
        "name": "24 h at 00:00",
        "time_zone": NEW_YORK.key,
        "start_date": (today - timedelta(days=2)).isoformat(),
        "handoff": "00:00",
        "shift_length": 1,
        "shift_unit": "days",
        "participants": [str(first), str(second)],
    }
    assert (await admin.post("/v1/admin/rotations", json=daily)).status_code == 201
    assert await on_call_at_site(admin, site.site_id) == [str(first)]  # day 2: the first again

    site_token = await admin.post("/v1/admin/calendar-tokens", json={"site_id": site.site_id})
    coach_token = await admin.post("/v1/admin/calendar-tokens", json={"coach_id": str(second)})
    assert site_token.status_code == coach_token.status_code == 201
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=matching.app), base_url="http://matching"
    ) as subscriber:
        feed = await subscriber.get(site_token.json()["path"])
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/calendar")
        events = Calendar.from_ical(feed.text).walk("VEVENT")
        assert 60 <= len(events) <= 61  # a shift a day for the next 60 days
        assert {str(e["summary"]) for e in events} == {
            f"Coach 0 of {site.site_id}",
            f"Coach 1 of {site.site_id}",
        }
        again = Calendar.from_ical((await subscriber.get(site_token.json()["path"])).text)
        assert [str(e["uid"]) for e in again.walk("VEVENT")] == [str(e["uid"]) for e in events]
        mine = Calendar.from_ical((await subscriber.get(coach_token.json()["path"])).text)
        assert {str(e[COACH_PROPERTY]) for e in mine.walk("VEVENT")} == {str(second)}
        assert 30 <= len(mine.walk("VEVENT")) <= 31

        token_id = site_token.json()["token_id"]
        assert (await admin.delete(f"/v1/admin/calendar-tokens/{token_id}")).status_code == 204
        assert (await subscriber.get(site_token.json()["path"])).status_code == 404

    now = datetime.now(UTC)
    ics = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:cover@tests\r\nDTSTAMP:{now:%Y%m%dT%H%M%SZ}\r\n"
        f"DTSTART:{now - timedelta(hours=1):%Y%m%dT%H%M%SZ}\r\n"
        f"DTEND:{now + timedelta(hours=1):%Y%m%dT%H%M%SZ}\r\n"
        f"SUMMARY:Coach 1 of {site.site_id}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    params = {"pool": f"site:{site.site_id}", "name": "cover", "priority": "5"}
    imported = await admin.post("/v1/admin/calendars/import", params=params, content=ics)
    assert imported.status_code == 201, imported.text
    assert imported.json()["shifts"] == 1
    assert await on_call_at_site(admin, site.site_id) == [str(second)]  # the higher layer
    unknown = await admin.post(
        "/v1/admin/calendars/import", params=params, content=ics.replace("Coach 1", "Nobody")
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["fields"][0]["field"] == "body"
    layers = (await admin.get("/v1/admin/layers", params={"pool": f"site:{site.site_id}"})).json()
    assert [(layer["name"], layer["priority"]) for layer in layers] == [
        ("cover", 5),
        ("24 h at 00:00", 0),
    ]

    strike = {
        "pool": f"site:{site.site_id}",
        "start": (now - timedelta(minutes=1)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
        "shifts": [],
    }
    temporary = await admin.post("/v1/admin/temporary-schedules", json=strike)
    assert temporary.status_code == 201
    assert await on_call_at_site(admin, site.site_id) == []
    outside = {
        **strike,
        "shifts": [
            {
                "coach_id": str(first),
                "start": strike["start"],
                "end": (now + timedelta(hours=2)).isoformat(),
            }
        ],
    }
    refused = await admin.post("/v1/admin/temporary-schedules", json=outside)
    assert refused.status_code == 422
    temporary_id = temporary.json()["temporary_id"]
    assert (await admin.delete(f"/v1/admin/temporary-schedules/{temporary_id}")).status_code == 204
    assert await on_call_at_site(admin, site.site_id) == [str(second)]


def handoff_cli(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [".venv/bin/handoff", "matching", *args],
        env={**os.environ, "DATABASE_URL": database},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def day_shifts_in_import_window(now: datetime, days: int) -> int:
    """How many 08:00-20:00 New York shifts of a daily calendar overlap an import's window
    (a day before `now` to `days` after): 31 or 32 for 30 days, by the time of day `now`
    falls at (32 from 13:00 to 01:00 UTC in winter)."""
    start, end = now - timedelta(days=1), now + timedelta(days=days)
    first = start.astimezone(NEW_YORK).date() - timedelta(days=1)
    shifts = 0
    for offset in range(days + 4):
        day = first + timedelta(days=offset)
        begins = datetime(day.year, day.month, day.day, 8, tzinfo=NEW_YORK)
        if begins < end and begins + timedelta(hours=12) > start:
            shifts += 1
    return shifts


async def test_coordinators_keep_rotations_layers_calendars_from_the_command_line(
    admin: httpx.AsyncClient, database: str, tmp_path: Path
) -> None:
    site = Site("MD", 2)
    await site.register(database)
    first, second = site.coaches
    pool = f"site:{site.site_id}"
    rotation = [
        *("rotation", "add", "--pool", pool, "--name", "nights", "--time-zone", NEW_YORK.key),
        *("--start-date", "2026-10-05", "--handoff", "20:00", "--every", "1", "--unit", "days"),
        *("--participant", str(first), "--participant", str(second), "--priority", "3"),
    ]
    added = await asyncio.to_thread(handoff_cli, database, *rotation)
    assert added.returncode == 0, added.stderr
    listed = await asyncio.to_thread(handoff_cli, database, "rotation", "list", "--pool", pool)
    assert f"{pool}  'nights'  priority 3  every 1 days from 2026-10-05 20:00" in listed.stdout
    unknown = [*rotation[:-3], str(uuid.uuid4())]
    refused = await asyncio.to_thread(handoff_cli, database, *unknown)
    assert refused.returncode == 2
    assert "participants: no such coach in the roster" in refused.stderr

    layer_id = added.stdout.split()[1]
    lowered = await asyncio.to_thread(handoff_cli, database, "schedule", "priority", layer_id, "1")
    assert lowered.returncode == 0, lowered.stderr
    layers = (await admin.get("/v1/admin/layers", params={"pool": pool})).json()
    assert [(layer["name"], layer["priority"]) for layer in layers] == [("nights", 1)]

    token = await asyncio.to_thread(
        handoff_cli, database, "calendar", "token", "--coach", str(first)
    )
    assert token.returncode == 0, token.stderr
    assert "GET /v1/calendars/" in token.stdout
    exported = tmp_path / "rota.ics"
    now = datetime.now(UTC)
    exported.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:days@tests\r\nDTSTAMP:{now:%Y%m%dT%H%M%SZ}\r\nDTSTART:20261005T080000\r\n"
        "DTEND:20261005T200000\r\nRRULE:FREQ=DAILY\r\n"
        f"SUMMARY:Coach 0 of {site.site_id}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    before = day_shifts_in_import_window(datetime.now(UTC), days=30)
    imported = await asyncio.to_thread(
        handoff_cli,
        database,
        "ics",
        "import",
        str(exported),
        "--pool",
        pool,
        "--name",
        "days",
        "--days",
        "30",
    )
    after = day_shifts_in_import_window(datetime.now(UTC), days=30)
    assert imported.returncode == 0, imported.stderr
    assert any(f": {n} shifts until" in imported.stdout for n in {before, after}), imported.stdout
    removed = await asyncio.to_thread(handoff_cli, database, "schedule", "remove", layer_id)
    assert removed.returncode == 0, removed.stderr
    layers = (await admin.get("/v1/admin/layers", params={"pool": pool})).json()
    assert [layer["name"] for layer in layers] == ["days"]


async def _publish(broker: KafkaBroker, change: CoachAvailabilityChanged) -> None:
    """As notify publishes a coach's OFF or ON."""
    envelope = Envelope.wrap(change, source="/handoff/notify", correlation_id="tests")
    await broker.publish(
        envelope.model_dump_json().encode(), Topic.PAGES.value, key=partition_key(envelope.subject)
    )


async def test_a_coach_not_certified_in_the_pools_state_cannot_be_scheduled_there(
    admin: httpx.AsyncClient, database: str
) -> None:
    """A new coordinator put a Vermont-only coach on a Maryland rota: the timeline showed
    cover that matching never pages. Rotations, overrides, temporary schedules and imported
    calendars now refuse such a coach, naming the field."""
    maryland, vermont = Site("MD", 1), Site("VT", 1)
    await maryland.register(database)
    await vermont.register(database)
    [outsider] = vermont.coaches
    now = datetime.now(UTC)
    pool = f"site:{maryland.site_id}"
    attempts = [
        (
            "/v1/admin/rotations",
            {
                "pool": pool,
                "name": "with an outsider",
                "time_zone": NEW_YORK.key,
                "start_date": now.date().isoformat(),
                "handoff": "08:00:00",
                "shift_length": 1,
                "shift_unit": "days",
                "participants": [str(maryland.coaches[0]), str(outsider)],
            },
            "participants",
        ),
        (
            "/v1/admin/overrides",
            {
                "override_id": str(uuid.uuid4()),
                "kind": "add",
                "pool": pool,
                "coach_id": str(outsider),
                "starts_at": now.isoformat(),
                "ends_at": (now + timedelta(hours=8)).isoformat(),
            },
            "coach_id",
        ),
        (
            "/v1/admin/temporary-schedules",
            {
                "pool": pool,
                "start": now.isoformat(),
                "end": (now + timedelta(days=1)).isoformat(),
                "shifts": [
                    {
                        "coach_id": str(outsider),
                        "start": now.isoformat(),
                        "end": (now + timedelta(days=1)).isoformat(),
                    }
                ],
            },
            "shifts",
        ),
    ]
    for path, body, field in attempts:
        refused = await admin.post(path, json=body)
        assert refused.status_code == 422, (path, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "not_certified"
        assert error["fields"][0]["field"] == field
        assert "holds no current certification in MD" in error["message"]
    assert await on_call_at_site(admin, maryland.site_id) == []


async def test_out_of_range_dates_priorities_backwards_events_and_overlaps_are_named(
    admin: httpx.AsyncClient, database: str
) -> None:
    """A fresh coordinator's typos: year 9999 (was a 500), a priority of 500, an .ics event
    ending before it starts (was quietly swapped), and a second temporary schedule over the
    first (was silently accepted): each a 422 naming the field, and nothing stored."""
    site = Site("MD", 1)
    await site.register(database)
    [coach] = site.coaches
    pool = f"site:{site.site_id}"
    now = datetime.now(UTC)
    rotation = {
        "pool": pool,
        "name": "typos",
        "time_zone": NEW_YORK.key,
        "start_date": "9999-12-31",
        "handoff": "08:00:00",
        "shift_length": 1,
        "shift_unit": "days",
        "participants": [str(coach)],
    }
    far = await admin.post("/v1/admin/rotations", json=rotation)
    assert far.status_code == 422, far.text
    assert far.json()["error"]["fields"][0]["field"] == "start_date"
    assert "2000 to 2100" in far.json()["error"]["fields"][0]["message"]
    high = await admin.post(
        "/v1/admin/rotations", json={**rotation, "start_date": "2026-12-01", "priority": 500}
    )
    assert high.status_code == 422, high.text
    assert high.json()["error"]["fields"][0]["field"] == "priority"
    negative = await admin.post(
        "/v1/admin/rotations", json={**rotation, "start_date": "2026-12-01", "priority": -1}
    )
    assert negative.status_code == 422, negative.text
    override = {
        "override_id": str(uuid.uuid4()),
        "kind": "add",
        "pool": pool,
        "coach_id": str(coach),
        "starts_at": now.isoformat(),
        "ends_at": "9999-12-31T23:59:59+00:00",
    }
    far_override = await admin.post("/v1/admin/overrides", json=override)
    assert far_override.status_code == 422, far_override.text
    assert far_override.json()["error"]["fields"][0]["field"] == "ends_at"
    far_on_call = await admin.get(
        f"/v1/admin/sites/{site.site_id}/on-call", params={"at": "9999-12-31T00:00:00Z"}
    )
    assert far_on_call.status_code == 422, far_on_call.text

    backwards = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//test//EN",
            "BEGIN:VEVENT",
            "UID:backwards@test",
            "DTSTAMP:20261201T000000Z",
            (now + timedelta(days=2)).strftime("DTSTART:%Y%m%dT180000Z"),
            (now + timedelta(days=2)).strftime("DTEND:%Y%m%dT080000Z"),
            f"{COACH_PROPERTY}:{coach}",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    refused = await admin.post(
        "/v1/admin/calendars/import",
        params={"pool": pool, "name": "backwards"},
        content=backwards,
        headers={"Content-Type": "text/calendar"},
    )
    assert refused.status_code == 422, refused.text
    assert "backwards@test" in refused.json()["error"]["message"]
    assert "is not after DTSTART" in refused.json()["error"]["message"]
    layers = await admin.get("/v1/admin/layers", params={"pool": pool})
    assert [la["name"] for la in layers.json() if la["kind"] == "calendar"] == []

    first = {
        "pool": pool,
        "start": (now + timedelta(days=1)).isoformat(),
        "end": (now + timedelta(days=3)).isoformat(),
        "shifts": [],
    }
    created = await admin.post("/v1/admin/temporary-schedules", json=first)
    assert created.status_code == 201, created.text
    overlapping = {
        **first,
        "start": (now + timedelta(days=2)).isoformat(),
        "end": (now + timedelta(days=4)).isoformat(),
    }
    clash = await admin.post("/v1/admin/temporary-schedules", json=overlapping)
    assert clash.status_code == 422, clash.text
    assert clash.json()["error"]["code"] == "temporary_overlaps"
    assert clash.json()["error"]["fields"][0]["field"] == "start"
    # Named in the site's clock, as typed, by its window: no UTC, no raw id.
    local = [(now + timedelta(days=d)).astimezone(NEW_YORK) for d in (1, 3)]
    assert clash.json()["error"]["message"] == (
        f"the pool already has a temporary schedule from {local[0]:%a %d %b %Y %H:%M} to "
        f"{local[1]:%a %d %b %Y %H:%M} (America/New_York); change or remove it first"
    )
    assert created.json()["temporary_id"] not in clash.json()["error"]["message"]
    after = {
        **first,
        "start": (now + timedelta(days=3)).isoformat(),
        "end": (now + timedelta(days=4)).isoformat(),
    }
    adjacent = await admin.post("/v1/admin/temporary-schedules", json=after)
    assert adjacent.status_code == 201, adjacent.text  # touching is not overlapping
    listed = await admin.get("/v1/admin/temporary-schedules", params={"pool": pool})
    assert len(listed.json()) == 2


async def test_the_same_override_twice_is_409_and_supervisors_must_be_certified(
    admin: httpx.AsyncClient, database: str
) -> None:
    """A double submit of one override (new id, same change) is refused 409 naming the one
    kept; the same id again is an idempotent replay. A supervisor from another state is a
    422 naming `supervisors`, as a scheduled coach is."""
    maryland, vermont = Site("MD", 1), Site("VT", 1)
    await maryland.register(database)
    await vermont.register(database)
    [coach] = maryland.coaches
    now = datetime.now(UTC).replace(microsecond=0)
    override = {
        "override_id": str(uuid.uuid4()),
        "kind": "add",
        "pool": f"site:{maryland.site_id}",
        "coach_id": str(coach),
        "starts_at": now.isoformat(),
        "ends_at": (now + timedelta(hours=8)).isoformat(),
    }
    assert (await admin.post("/v1/admin/overrides", json=override)).status_code == 201
    replay = await admin.post("/v1/admin/overrides", json=override)
    assert replay.status_code == 201, replay.text
    twice = await admin.post(
        "/v1/admin/overrides", json={**override, "override_id": str(uuid.uuid4())}
    )
    assert twice.status_code == 409, twice.text
    assert twice.json()["error"]["code"] == "duplicate_override"
    assert override["override_id"] in twice.json()["error"]["message"]
    stored = await admin.get("/v1/admin/overrides", params={"pool": override["pool"]})
    assert [o["override_id"] for o in stored.json()] == [override["override_id"]]

    settings = (await admin.get(f"/v1/admin/sites/{maryland.site_id}/dispatch")).json()
    outsider = await admin.put(
        f"/v1/admin/sites/{maryland.site_id}/dispatch",
        json={**settings, "supervisors": [str(vermont.coaches[0])]},
    )
    assert outsider.status_code == 422, outsider.text
    assert outsider.json()["error"]["code"] == "not_certified"
    assert outsider.json()["error"]["fields"][0]["field"] == "supervisors"
    patched = await admin.patch(
        f"/v1/admin/sites/{maryland.site_id}/dispatch",
        json={"supervisors": [str(vermont.coaches[0])]},
    )
    assert patched.status_code == 422, patched.text
    certified = await admin.put(
        f"/v1/admin/sites/{maryland.site_id}/dispatch",
        json={**settings, "supervisors": [str(coach)]},
    )
    assert certified.status_code == 200, certified.text


async def test_calendar_feeds_are_listed_by_coach_and_site_without_their_secret(
    admin: httpx.AsyncClient, database: str
) -> None:
    """What the console's feed list reads: a pool's feeds by site and coach, who and since
    when; a revoked one is gone from the list; a malformed site id is a 422."""
    site = Site("MD", 1)
    await site.register(database)
    [coach] = site.coaches
    made_site = await admin.post("/v1/admin/calendar-tokens", json={"site_id": site.site_id})
    made_coach = await admin.post("/v1/admin/calendar-tokens", json={"coach_id": str(coach)})
    assert made_site.status_code == made_coach.status_code == 201
    listed = await admin.get(
        "/v1/admin/calendar-tokens", params={"site_id": site.site_id, "coach_id": str(coach)}
    )
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert {(r["site_id"], r["coach_id"]) for r in rows} == {
        (site.site_id, None),
        (None, str(coach)),
    }
    secret = made_site.json()["path"].removeprefix("/v1/calendars/").removesuffix(".ics")
    assert secret not in listed.text
    revoked = await admin.delete(f"/v1/admin/calendar-tokens/{made_site.json()['token_id']}")
    assert revoked.status_code == 204
    after = await admin.get("/v1/admin/calendar-tokens", params={"site_id": site.site_id})
    assert after.json() == []
    bad = await admin.get("/v1/admin/calendar-tokens", params={"site_id": "NOT A\x00SITE"})
    assert bad.status_code == 422


async def test_a_rotation_is_changed_in_place_with_the_checks_of_create(
    admin: httpx.AsyncClient, database: str
) -> None:
    """A coordinator edits a rotation: same layer id (calendar UIDs and history stay), every
    setting replaced, the on-call follows; a bad edit is a 422 or 409 naming the field and
    changes nothing."""
    site, vermont = Site("MD", 2), Site("VT", 1)
    await site.register(database)
    await vermont.register(database)
    first, second = site.coaches
    pool = f"site:{site.site_id}"
    yesterday = (datetime.now(NEW_YORK) - timedelta(days=1)).date().isoformat()
    rotation = {
        "pool": pool,
        "name": "weeks",
        "time_zone": NEW_YORK.key,
        "start_date": yesterday,
        "handoff": "00:00:00",
        "shift_length": 1,
        "shift_unit": "weeks",
        "participants": [str(first)],
    }
    created = await admin.post("/v1/admin/rotations", json=rotation)
    assert created.status_code == 201, created.text
    layer_id = created.json()["layer_id"]
    other = await admin.post("/v1/admin/rotations", json={**rotation, "name": "other"})
    assert other.status_code == 201, other.text
    assert sorted(await on_call_at_site(admin, site.site_id)) == [str(first)]

    edited = {**rotation, "name": "weeks, edited", "priority": 7, "participants": [str(second)]}
    changed = await admin.put(f"/v1/admin/rotations/{layer_id}", json=edited)
    assert changed.status_code == 200, changed.text
    assert changed.json()["layer_id"] == layer_id
    listed = {
        r["layer_id"]: r
        for r in (await admin.get("/v1/admin/rotations", params={"pool": pool})).json()
    }
    assert listed[layer_id]["name"] == "weeks, edited"
    assert listed[layer_id]["priority"] == 7
    assert listed[layer_id]["participants"] == [str(second)]
    assert await on_call_at_site(admin, site.site_id) == [str(second)], "the top layer wins"

    refusals = [
        ({**edited, "name": "other"}, 409, "name"),
        ({**edited, "participants": [str(vermont.coaches[0])]}, 422, "participants"),
        ({**edited, "participants": [str(uuid.uuid4())]}, 422, "participants"),
        ({**edited, "pool": f"site:{vermont.site_id}"}, 422, "pool"),
        ({**edited, "priority": 101}, 422, "priority"),
        ({**edited, "shift_unit": "fortnights"}, 422, "shift_unit"),
    ]
    for body, status, field in refusals:
        refused = await admin.put(f"/v1/admin/rotations/{layer_id}", json=body)
        assert refused.status_code == status, (field, refused.text)
        assert refused.json()["error"]["fields"][0]["field"] == field, refused.text
    after = {
        r["layer_id"]: r
        for r in (await admin.get("/v1/admin/rotations", params={"pool": pool})).json()
    }
    assert after[layer_id] == listed[layer_id], "a refused edit changes nothing"

    missing = await admin.put(f"/v1/admin/rotations/{uuid.uuid4()}", json=edited)
    assert missing.status_code == 404
    weekly = Site("MD", 1)
    await weekly.register(database, weekly=True)
    [weekly_layer] = (
        await admin.get("/v1/admin/layers", params={"pool": f"site:{weekly.site_id}"})
    ).json()
    not_rotation = await admin.put(
        f"/v1/admin/rotations/{weekly_layer['layer_id']}",
        json={**edited, "pool": f"site:{weekly.site_id}", "participants": [str(weekly.coaches[0])]},
    )
    assert not_rotation.status_code == 404, "weekly shifts change by roster import"


async def test_a_coach_whose_certification_expired_is_not_cover_anywhere(
    matching: MatchingRuntime, admin: httpx.AsyncClient, database: str
) -> None:
    """Issue #15: a rotation still names a coach whose certification in the state expired.
    The gap report, on-call?at=, the timeline's data (site and pool) and the site's feed all
    read her turns as nobody by one rule; her own feed shows them flagged."""
    site = Site("MD", 2)
    await site.register(database)
    current, lapsed = site.coaches
    today = datetime.now(NEW_YORK).date()
    rotation = {
        "pool": f"site:{site.site_id}",
        "name": "Mercy days",
        "time_zone": NEW_YORK.key,
        "start_date": (today - timedelta(days=1)).isoformat(),
        "handoff": "08:00",
        "shift_length": 1,
        "shift_unit": "days",
        "participants": [str(current), str(lapsed)],
    }
    assert (await admin.post("/v1/admin/rotations", json=rotation)).status_code == 201
    connection = await asyncpg.connect(database)
    try:  # as a roster re-import with her certification through yesterday would leave it
        await connection.execute(
            f"UPDATE {SCHEMA}.certifications SET expires_on = $2 WHERE coach_id = $1",
            lapsed,
            today - timedelta(days=1),
        )
    finally:
        await connection.close()

    schedule = (await admin.get(f"/v1/admin/sites/{site.site_id}/schedule")).json()
    theirs = [s for s in schedule["segments"] if str(lapsed) in s["site"]]
    assert theirs, "the rotation gives her turns in the next 14 days"
    assert all(s["not_covering"] == {str(lapsed): "certification expired"} for s in theirs)
    assert all(s["not_covering"] == {} for s in schedule["segments"] if str(current) in s["site"])
    # The timeline's gaps are the report's: her turns (clipped to the window), nothing else.
    report = (await admin.get(f"/v1/admin/sites/{site.site_id}/coverage?days=14")).json()
    assert len(schedule["gaps"]) == len(report["gaps"]) == len(theirs)
    inner = [(g["start"], g["end"]) for g in schedule["gaps"][1:-1]]
    assert inner == [(g["start"], g["end"]) for g in report["gaps"][1:-1]]
    assert inner == [(s["start"], s["end"]) for s in theirs[1:-1]]
    pool_line = (await admin.get(f"/v1/admin/pools/site:{site.site_id}/schedule")).json()
    assert any(
        s["not_covering"] == {str(lapsed): "certification expired"} for s in pool_line["segments"]
    )

    middle = datetime.fromisoformat(theirs[1]["start"]) + timedelta(hours=1)
    on_call = await admin.get(
        f"/v1/admin/sites/{site.site_id}/on-call", params={"at": middle.isoformat()}
    )
    assert on_call.status_code == 200, on_call.text
    assert on_call.json()["site"] == []
    assert on_call.json()["not_covering"] == [
        {"coach_id": str(lapsed), "reason": "certification expired"}
    ]

    site_token = await admin.post("/v1/admin/calendar-tokens", json={"site_id": site.site_id})
    own_token = await admin.post("/v1/admin/calendar-tokens", json={"coach_id": str(lapsed)})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=matching.app), base_url="http://matching"
    ) as subscriber:
        feed = Calendar.from_ical((await subscriber.get(site_token.json()["path"])).text)
        assert {str(e["summary"]) for e in feed.walk("VEVENT")} == {f"Coach 0 of {site.site_id}"}
        own = Calendar.from_ical((await subscriber.get(own_token.json()["path"])).text)
        titles = {str(e["summary"]) for e in own.walk("VEVENT")}
        assert titles == {f"On call: {site.site_id} (not counted as cover: certification expired)"}


async def test_a_coach_covering_herself_is_refused_naming_replaces(
    admin: httpx.AsyncClient, database: str
) -> None:
    site = Site("MD", 1)
    await site.register(database)
    [maya] = site.coaches
    now = datetime.now(UTC).replace(microsecond=0)
    herself = await admin.post(
        "/v1/admin/overrides",
        json={
            "override_id": str(uuid.uuid4()),
            "kind": "replace",
            "pool": f"site:{site.site_id}",
            "coach_id": str(maya),
            "replaces": str(maya),
            "starts_at": now.isoformat(),
            "ends_at": (now + timedelta(hours=8)).isoformat(),
        },
    )
    assert herself.status_code == 422, herself.text
    assert herself.json()["error"]["code"] == "covers_self"
    assert herself.json()["error"]["fields"][0]["field"] == "replaces"
    listed = await admin.get("/v1/admin/overrides", params={"pool": f"site:{site.site_id}"})
    assert listed.json() == []


async def test_a_rotations_first_handoff_the_clocks_skip_or_repeat_is_named(
    admin: httpx.AsyncClient, database: str
) -> None:
    """02:30 on 2027-03-14 never happens in New York, 01:30 on 2026-11-01 happens twice:
    either is a 422 naming `handoff`, as the console's forms name such a time."""
    site = Site("MD", 1)
    await site.register(database)
    pool = f"site:{site.site_id}"
    rotation: dict[str, Any] = {
        "pool": pool,
        "name": "nights",
        "time_zone": NEW_YORK.key,
        "start_date": "2027-03-14",
        "handoff": "02:30",
        "shift_length": 1,
        "shift_unit": "days",
        "participants": [str(site.coaches[0])],
    }
    skipped = await admin.post("/v1/admin/rotations", json=rotation)
    assert skipped.status_code == 422, skipped.text
    assert skipped.json()["error"]["code"] == "time_does_not_exist"
    assert skipped.json()["error"]["fields"][0]["field"] == "handoff"
    assert skipped.json()["error"]["message"] == (
        "02:30 does not exist on 2027-03-14 in America/New_York (the clocks go forward then)"
    )
    twice = await admin.post(
        "/v1/admin/rotations", json={**rotation, "start_date": "2026-11-01", "handoff": "01:30"}
    )
    assert twice.status_code == 422, twice.text
    assert twice.json()["error"]["code"] == "time_happens_twice"
    assert twice.json()["error"]["fields"][0]["field"] == "handoff"
    listed = await admin.get("/v1/admin/rotations", params={"pool": pool})
    assert listed.json() == []
    next_day = await admin.post(
        "/v1/admin/rotations", json={**rotation, "start_date": "2026-11-02", "handoff": "01:30"}
    )
    assert next_day.status_code == 201, next_day.text
    moved = await admin.put(
        f"/v1/admin/rotations/{next_day.json()['layer_id']}",
        json={**rotation, "start_date": "2027-03-14", "handoff": "02:30"},
    )
    assert moved.status_code == 422, moved.text
    assert moved.json()["error"]["fields"][0]["field"] == "handoff"
