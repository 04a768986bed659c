"""A site's callback through the admin API and the CLI, a delivery the site never takes
(failed after its retry window, listed, replayed), and a secret rotation, on real Kafka and
PostgreSQL with the referral service in-process."""

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from handoff_referral.adapters import postgres as store
from handoff_referral.app import ReferralRuntime
from handoff_referral.domain.status import Status, Step
from handoff_referral.settings import ReferralSettings
from tests.integration.conftest import HANDOFF, create_database, handoff_command, register_site
from tests.support.patients import record_page_body, referral_body
from tests.support.status_receiver import StatusReceiver
from tests.support.waiting import eventually

ADMIN_TOKEN = "referral-admin-secret"
WINDOW_SECONDS = 3.0


@pytest.fixture
async def receiver() -> AsyncIterator[StatusReceiver]:
    receiver = StatusReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        for call in receiver.calls:
            record_page_body(call.body.decode(errors="replace"))  # for the PHI scan
        await receiver.stop()


@contextlib.asynccontextmanager
async def _started(
    database_url: str, kafka_topics: str, window_seconds: float
) -> AsyncIterator[ReferralRuntime]:
    """The referral service in-process on a fresh database, retrying a failing delivery
    every 0.2 to 0.5 s for `window_seconds`."""
    settings = ReferralSettings(
        database_url=await create_database(database_url),
        kafka_bootstrap_servers=kafka_topics,
        consumer_group=f"handoff-referral-admin-{uuid.uuid4().hex[:6]}",
        referral_admin_token=ADMIN_TOKEN,
        webhook_allow_http=True,
        webhook_retry_initial_seconds=0.2,
        webhook_retry_max_seconds=0.5,
        webhook_retry_window_seconds=window_seconds,
        webhook_poll_seconds=0.05,
    )
    runtime = await ReferralRuntime.start(settings)
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture
async def runtime(database_url: str, kafka_topics: str) -> AsyncIterator[ReferralRuntime]:
    async with _started(database_url, kafka_topics, WINDOW_SECONDS) as started:
        yield started


@pytest.fixture
async def patient_runtime(database_url: str, kafka_topics: str) -> AsyncIterator[ReferralRuntime]:
    """Retries every half second for ten minutes: a failing step stays pending for the
    whole test."""
    async with _started(database_url, kafka_topics, 600) as started:
        yield started


def _client(runtime: ReferralRuntime, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=runtime.app),
        base_url="http://referral",
        headers={"Authorization": f"Bearer {token}"},
    )


def _cli(database_url: str, *args: str) -> str:
    return handoff_command("referral", "webhooks", *args, database_url=database_url)


async def _states(runtime: ReferralRuntime, referral_id: str) -> list[tuple[str, str]]:
    async with runtime.pool.acquire() as connection:
        rows = await connection.fetch(
            """SELECT step, state FROM referral.webhook_deliveries
               WHERE referral_id = $1 ORDER BY seq""",
            uuid.UUID(referral_id),
        )
    return [(row["step"], row["state"]) for row in rows]


def _metric(name: str, site_id: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"site": site_id, **labels}) or 0.0


async def test_a_callback_set_by_the_admin_api_fails_lists_replays_and_rotates(
    runtime: ReferralRuntime, receiver: StatusReceiver
) -> None:
    site, _, token = await register_site(runtime)
    path = f"/v1/admin/sites/{site.site_id}/webhook"
    async with _client(runtime, ADMIN_TOKEN) as admin, _client(runtime, token) as hospital:
        async with _client(runtime, "not-the-token") as stranger:
            assert (await stranger.put(path, json={"url": receiver.url})).status_code == 401
        refused = await admin.put(path, json={"url": "ftp://ehr.example/hook"})
        assert refused.status_code == 422
        assert refused.json()["error"]["fields"][0]["field"] == "url"
        unknown = await admin.put("/v1/admin/sites/no-such-site/webhook", json={"url": "http://x"})
        assert unknown.status_code == 404

        created = await admin.put(path, json={"url": receiver.url})
        assert created.status_code == 201
        secret = created.json()["secret"]
        assert secret.startswith("whsec_")
        again = await admin.put(path, json={"url": receiver.url})
        assert (again.status_code, again.json()["secret"]) == (200, None)  # shown once
        receiver.secret = secret

        # The hospital's endpoint answers 500 to everything: the steps are retried, in order,
        # and failed once their window passes.
        receiver.refuse_all = 500
        before = datetime.now(UTC) - timedelta(seconds=5)
        posted = await hospital.post("/v1/referrals", json=referral_body(f"ED-{uuid.uuid4()}"))
        referral_id = posted.json()["id"]
        await eventually(lambda: _called(receiver, referral_id, 1), within=10, what="a try")
        await runtime.webhooks.report_backlog()
        assert _metric("handoff_webhook_pending", site.site_id) >= 1
        assert _metric("handoff_webhook_oldest_pending_seconds", site.site_id) > 0
        cancel = await hospital.post(
            f"/v1/referrals/{referral_id}/cancel", json={"reason": "patient_left"}
        )
        assert cancel.status_code == 200
        failed = [("received", "failed"), ("cancelled", "failed")]

        async def both_failed() -> bool:
            return await _states(runtime, referral_id) == failed

        await eventually(both_failed, within=4 * WINDOW_SECONDS + 10, what="both steps failed")
        # Each step's window runs from its own first attempt: `cancelled`, held behind the
        # failing `received`, gets its whole window after `received` was given up, not the
        # remains of one that started when the referral first failed.
        received_at, cancelled_at, cancelled_first = await _settled_times(runtime, referral_id)
        assert cancelled_first >= received_at
        assert (cancelled_at - received_at).total_seconds() >= WINDOW_SECONDS - 0.5
        steps = [c.data["step"] for c in receiver.of(referral_id)]
        assert {"received", "cancelled"} == set(steps)
        assert steps == sorted(steps, key=["received", "cancelled"].index)  # never interleaved
        assert _metric("handoff_webhook_deliveries_total", site.site_id, outcome="retry") >= 2
        assert _metric("handoff_webhook_deliveries_total", site.site_id, outcome="failed") >= 2

        listed = await admin.get(
            "/v1/admin/webhook-deliveries", params={"site_id": site.site_id, "failing": "true"}
        )
        assert [(d["step"], d["state"], d["last_error"]) for d in listed.json()] == [
            ("cancelled", "failed", "HTTP 500"),
            ("received", "failed", "HTTP 500"),
        ]
        ids = [d["delivery_id"] for d in reversed(listed.json())]
        database_url = runtime.settings.database_url
        failing = _cli(database_url, "list", "--failing", "--site", site.site_id)
        assert [line.split("\t")[0] for line in failing.splitlines()] == ids[::-1]

        # Fixed: the operator replays the site's failed steps from the CLI.
        receiver.refuse_all = None
        since = before.isoformat()
        replayed = _cli(
            database_url, "replay", "--site", site.site_id, "--since", since, "--failed-only"
        )
        assert replayed.strip() == "2 deliveries queued again"
        await eventually(lambda: _taken(receiver, referral_id, 2), within=10, what="replayed")
        taken = [c for c in receiver.of(referral_id) if c.answered == 200]
        assert [c.data["step"] for c in taken] == ["received", "cancelled"]
        assert [c.headers["webhook-id"] for c in taken] == ids  # the same messages again
        assert (await admin.get(
            "/v1/admin/webhook-deliveries", params={"site_id": site.site_id, "failing": "true"}
        )).json() == []  # fmt: skip

        # A rotation: the next deliveries verify with the new secret and, for a day, the old.
        rotated = await admin.post(f"{path}/rotate-secret")
        new_secret = rotated.json()["secret"]
        assert new_secret not in (secret, None)
        second = await hospital.post("/v1/referrals", json=referral_body(f"ED-{uuid.uuid4()}"))
        second_id = second.json()["id"]
        await eventually(lambda: _taken(receiver, second_id, 1), within=10, what="after rotation")
        [call] = receiver.of(second_id)  # the receiver still verifies with the old secret
        Webhook(new_secret).verify(call.body, call.headers)

        assert (await admin.delete(path)).status_code == 204
        assert (await admin.get(path)).status_code == 404


async def _settled_times(
    runtime: ReferralRuntime, referral_id: str
) -> tuple[datetime, datetime, datetime]:
    """When `received` was given up, when `cancelled` was, and when `cancelled`'s window
    began."""
    async with runtime.pool.acquire() as connection:
        rows = await connection.fetch(
            """SELECT step, finished_at, due_since FROM referral.webhook_deliveries
               WHERE referral_id = $1""",
            uuid.UUID(referral_id),
        )
    by_step = {row["step"]: row for row in rows}
    return (
        by_step["received"]["finished_at"],
        by_step["cancelled"]["finished_at"],
        by_step["cancelled"]["due_since"],
    )


async def _called(receiver: StatusReceiver, referral_id: str, count: int) -> bool:
    return len(receiver.of(referral_id)) >= count


async def _taken(receiver: StatusReceiver, referral_id: str, count: int) -> bool:
    return len([c for c in receiver.of(referral_id) if c.answered == 200]) >= count


async def test_no_step_is_queued_for_a_site_without_a_callback(runtime: ReferralRuntime) -> None:
    site, _, token = await register_site(runtime)
    async with _client(runtime, token) as hospital:
        posted = await hospital.post("/v1/referrals", json=referral_body(f"ED-{uuid.uuid4()}"))
    assert posted.status_code == 201
    connection: asyncpg.Connection = await asyncpg.connect(runtime.settings.database_url)
    try:
        queued = await connection.fetchval(
            "SELECT count(*) FROM referral.webhook_deliveries WHERE site_id = $1", site.site_id
        )
    finally:
        await connection.close()
    assert queued == 0


async def test_an_earlier_step_recorded_a_moment_later_is_still_sent_first(
    runtime: ReferralRuntime, receiver: StatusReceiver
) -> None:
    """The coach's acceptance comes on handoff.dispatch and the arrival on handoff.pages, so
    the acceptance can be recorded second (a new integrator saw `arrived, completed,
    accepted`): the steps go out in timeline order."""
    site, _, token = await register_site(runtime)
    async with _client(runtime, ADMIN_TOKEN) as admin, _client(runtime, token) as hospital:
        created = await admin.put(
            f"/v1/admin/sites/{site.site_id}/webhook", json={"url": receiver.url}
        )
        receiver.secret = created.json()["secret"]
        posted = await hospital.post("/v1/referrals", json=referral_body(f"ED-{uuid.uuid4()}"))
    referral_id = posted.json()["id"]
    accepted_at = datetime.now(UTC)
    for step, at in ((Step.ARRIVED, 2), (Step.ACCEPTED, 1)):  # recorded out of order
        async with runtime.pool.acquire() as connection:
            await store.record_step(
                connection,
                uuid.UUID(referral_id),
                step,
                accepted_at + timedelta(seconds=at),
                Status.ARRIVED,
                datetime.now(UTC),
            )
        await asyncio.sleep(0.5)  # the two topics' consumers half a second apart
    await eventually(lambda: _taken(receiver, referral_id, 3), within=20, what="three steps")
    taken = [c.data["step"] for c in receiver.of(referral_id) if c.answered == 200]
    assert taken == ["received", "accepted", "arrived"]


async def test_a_replay_naming_no_site_or_referral_says_so(runtime: ReferralRuntime) -> None:
    """A mistyped id must not read as "0 deliveries queued again" (a new integrator's run)."""
    database_url = runtime.settings.database_url
    for args, said in (
        (["--site", "no-such-site", "--since", "2026-01-01T00:00:00Z"], "no site no-such-site"),
        (["--referral", str(uuid.UUID(int=0))], f"no referral {uuid.UUID(int=0)}"),
    ):
        done = await asyncio.to_thread(
            subprocess.run,
            [*HANDOFF, "referral", "webhooks", "replay", *args],
            env={**os.environ, "DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stderr.strip()) == (1, said)
    async with _client(runtime, ADMIN_TOKEN) as admin:
        answer = await admin.post(
            "/v1/admin/webhook-deliveries/replay", json={"site_id": "no-such-site"}
        )
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "site_unknown")


async def test_bad_input_to_the_admin_api_is_a_422_naming_the_field_never_a_500(
    runtime: ReferralRuntime,
) -> None:
    """fresh34b: a NUL byte in a callback URL, a site id or a replay's site was a 500 from
    PostgreSQL; "https://[::1/" a 500 from urlsplit; URLs no delivery could ever use (a
    newline, a space in the host, port 99999) were stored and failed for 24 h."""
    site, _, _ = await register_site(runtime)
    async with _client(runtime, ADMIN_TOKEN) as admin:
        for url in (
            "https://ehr.example/\u0000",
            "https://[::1/",
            "https://ehr.example/a\nb",
            "https://e hr.example/",
            "https://ehr.example:99999/",
        ):
            answer = await admin.put(f"/v1/admin/sites/{site.site_id}/webhook", json={"url": url})
            assert answer.status_code == 422, url
            assert [f["field"] for f in answer.json()["error"]["fields"]] == ["url"]
        listed = await admin.get("/v1/admin/webhook-deliveries", params={"site_id": "a\u0000b"})
        assert listed.status_code == 422
        assert [f["field"] for f in listed.json()["error"]["fields"]] == ["site_id"]
        for body, field in (
            ({"site_id": "md-mercy\u0000"}, "site_id"),
            ({"site_id": site.site_id, "failed_only": "yes"}, "failed_only"),
            ({"site_id": site.site_id, "since": "2026-12-01T00:00:00"}, "since"),
        ):
            replay = await admin.post("/v1/admin/webhook-deliveries/replay", json=body)
            assert replay.status_code == 422, body
            assert [f["field"] for f in replay.json()["error"]["fields"]] == [field]
        twice = await admin.post(
            "/v1/admin/webhook-deliveries/replay",
            content=b'{"site_id": "no-such-site", "site_id": "' + site.site_id.encode() + b'"}',
            headers={"content-type": "application/json"},
        )
        assert twice.status_code == 422
        assert twice.json()["error"]["fields"][0]["field"] == "site_id"
        assert (await admin.get(f"/v1/admin/sites/{site.site_id}/webhook")).status_code == 404


async def test_steps_held_behind_a_failing_one_are_listed_and_a_removed_callback_abandons_them(
    patient_runtime: ReferralRuntime, receiver: StatusReceiver
) -> None:
    """A new integrator's findings: `list --failing` left out the steps waiting behind the
    failing one; `webhooks remove` dropped deliveries no metric counted; a site's outcome
    series appeared only at their first increment, which `increase()` does not see."""
    runtime = patient_runtime
    database_url = runtime.settings.database_url
    site, _, token = await register_site(runtime)
    async with _client(runtime, ADMIN_TOKEN) as admin, _client(runtime, token) as hospital:
        path = f"/v1/admin/sites/{site.site_id}/webhook"
        receiver.secret = (await admin.put(path, json={"url": receiver.url})).json()["secret"]
        await runtime.webhooks.report_backlog()
        exported = {
            outcome: REGISTRY.get_sample_value(
                "handoff_webhook_deliveries_total", {"site": site.site_id, "outcome": outcome}
            )
            for outcome in ("delivered", "retry", "failed", "abandoned")
        }
        assert exported == dict.fromkeys(exported, 0.0)  # exported before anything happened

        receiver.refuse_all = 503
        posted = await hospital.post("/v1/referrals", json=referral_body(f"ED-{uuid.uuid4()}"))
        referral_id = posted.json()["id"]
        await eventually(lambda: _called(receiver, referral_id, 1), within=15, what="a try")
        cancel = await hospital.post(
            f"/v1/referrals/{referral_id}/cancel", json={"reason": "patient_left"}
        )
        assert cancel.status_code == 200

        failing = _cli(database_url, "list", "--failing", "--site", site.site_id).splitlines()
        rows = {line.split("\t")[3]: line.split("\t") for line in failing}
        assert set(rows) == {"received", "cancelled"}
        assert (rows["received"][4], rows["received"][8]) == ("pending", "HTTP 503")
        assert (rows["cancelled"][4], rows["cancelled"][5]) == ("pending", "0")
        assert rows["cancelled"][8] == f"waiting behind {rows['received'][0]}"
        listed = await admin.get(
            "/v1/admin/webhook-deliveries", params={"site_id": site.site_id, "failing": "true"}
        )
        assert [d["waiting_behind"] for d in listed.json()] == [rows["received"][0], None]

        # The site no longer wants webhooks: what was pending is abandoned, and counted once
        # by the serving process although the CLI removed it.
        assert _cli(database_url, "remove", "--site", site.site_id).strip() == (
            f"callback of {site.site_id} removed"
        )
        abandoned = [("received", "abandoned"), ("cancelled", "abandoned")]
        assert await _states(runtime, referral_id) == abandoned
        await runtime.webhooks.report_backlog()
        await runtime.webhooks.report_backlog()
        assert _metric("handoff_webhook_deliveries_total", site.site_id, outcome="abandoned") == 2
        assert _metric("handoff_webhook_deliveries_total", site.site_id, outcome="failed") == 0
        listed = await admin.get(
            "/v1/admin/webhook-deliveries", params={"site_id": site.site_id, "failing": "true"}
        )
        assert [(d["step"], d["state"]) for d in listed.json()] == abandoned[::-1]

        # Back: a callback again, and the abandoned steps replayed in order.
        receiver.refuse_all = None
        receiver.secret = (await admin.put(path, json={"url": receiver.url})).json()["secret"]
        replayed = _cli(database_url, "replay", "--referral", referral_id, "--failed-only")
        assert replayed.strip() == "2 deliveries queued again"
        await eventually(lambda: _taken(receiver, referral_id, 2), within=15, what="replayed")
        taken = [c.data["step"] for c in receiver.of(referral_id) if c.answered == 200]
        assert taken == ["received", "cancelled"]
