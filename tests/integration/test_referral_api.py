"""The hospital-facing API on a real database and broker: what an integration engine sees."""

import asyncio
import json
import uuid
from typing import Any

import httpx

from handoff_referral.adapters import postgres as referral_store
from handoff_referral.app import ReferralRuntime
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import ReferralCancelled, ReferralCreated
from tests.integration.conftest import HospitalFactory, outbox_empty
from tests.support.kafka import read_topic
from tests.support.patients import INITIALS, NOTES, referral_body
from tests.support.waiting import eventually


def _external_id() -> str:
    return f"ED-{uuid.uuid4().hex[:10]}"


async def _events_for(bootstrap: str, referral_id: str, runtime: ReferralRuntime) -> list[Any]:
    await eventually(lambda: outbox_empty(runtime), within=30, what="the outbox to drain")
    records = await read_topic(bootstrap, Topic.REFERRALS)
    return [
        (record, decode_event(record.value))
        for record in records
        if record.key == referral_id.encode()
    ]


async def test_create_answers_201_and_puts_exactly_one_referral_created_on_kafka(
    hospital: HospitalFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    ed = await hospital()
    response = await ed.client.post(
        "/v1/referrals",
        json=referral_body(_external_id()),
        headers={"X-Correlation-Id": "epic-msg-42"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "received"
    assert [step["status"] for step in created["timeline"]] == ["received"]
    assert created["received_at"].endswith("Z")
    assert response.headers["location"] == f"/v1/referrals/{created['id']}"
    assert response.headers["x-correlation-id"] == "epic-msg-42"

    events = await _events_for(kafka_topics, created["id"], referral)
    assert len(events) == 1
    record, envelope = events[0]
    assert isinstance(envelope.data, ReferralCreated)
    assert envelope.type == "org.handoff.referral.created"
    assert envelope.source == "/handoff/referral"
    assert str(envelope.subject) == created["id"]
    assert envelope.correlationid == "epic-msg-42"
    assert envelope.data.site.site_id == ed.site.site_id
    assert envelope.data.site.state == "MD"
    assert dict(record.headers)["content-type"] == b"application/cloudevents+json"
    wire = record.value.decode()
    assert NOTES not in wire
    assert f'"{INITIALS}"' not in wire
    assert "age_band" not in wire
    assert "36-45" not in wire


async def test_replaying_the_same_request_returns_the_original_and_publishes_nothing_new(
    hospital: HospitalFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    ed = await hospital()
    body = referral_body(_external_id())
    first = await ed.client.post("/v1/referrals", json=body)
    again = await ed.client.post("/v1/referrals", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(await _events_for(kafka_topics, first.json()["id"], referral)) == 1


async def test_simultaneous_retries_of_one_request_make_one_referral_and_one_event(
    hospital: HospitalFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    """An integration engine that times out and retries at once: the inserts race."""
    ed = await hospital()
    body = referral_body(_external_id())
    responses = await asyncio.gather(
        *(ed.client.post("/v1/referrals", json=body) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    [referral_id] = {r.json()["id"] for r in responses}
    assert len(await _events_for(kafka_topics, referral_id, referral)) == 1


async def test_the_same_external_id_with_a_different_body_is_a_409(
    hospital: HospitalFactory,
) -> None:
    ed = await hospital()
    external_id = _external_id()
    assert (
        await ed.client.post("/v1/referrals", json=referral_body(external_id))
    ).status_code == 201
    conflict = await ed.client.post(
        "/v1/referrals", json=referral_body(external_id, urgency="emergent")
    )
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "external_id_conflict"
    assert conflict.json()["error"]["fields"][0]["field"] == "external_id"


async def test_the_same_external_id_at_another_site_is_another_referral(
    hospital: HospitalFactory,
) -> None:
    first, second = await hospital(), await hospital()
    external_id = _external_id()
    a = await first.client.post("/v1/referrals", json=referral_body(external_id))
    b = await second.client.post("/v1/referrals", json=referral_body(external_id))
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_requests_without_a_valid_key_are_401(
    hospital: HospitalFactory, referral: ReferralRuntime
) -> None:
    ed = await hospital()
    body = referral_body(_external_id())
    transport = httpx.ASGITransport(app=referral.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://referral") as anonymous:
        token = ed.client.headers["authorization"].removeprefix("Bearer ")
        for headers in (
            {},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer not-a-key"},
            {"Authorization": f"Bearer {token[:-2]}xx"},
            {"Authorization": f"Bearer hok_{'0' * 12}_{'a' * 43}"},
        ):
            response = await anonymous.post("/v1/referrals", json=body, headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_key_stops_working_at_once(
    hospital: HospitalFactory, referral: ReferralRuntime
) -> None:
    """At once: as soon as the revocation's NOTIFY lands, even though keys are cached."""
    ed = await hospital()
    assert (await ed.client.get("/v1/referrals")).status_code == 200
    assert (await ed.client.get("/v1/referrals")).status_code == 200  # now served from cache
    async with referral.pool.acquire() as connection:
        assert await referral_store.revoke_key(connection, ed.key_id)

    async def refused() -> bool:
        return (await ed.client.get("/v1/referrals")).status_code == 401

    # The cache keeps a key a minute: refused within seconds is the NOTIFY's doing.
    await eventually(refused, within=5, what="the revoked key to be refused")


async def test_another_sites_referral_is_404_not_403(hospital: HospitalFactory) -> None:
    owner, stranger = await hospital(), await hospital()
    created = (await owner.client.post("/v1/referrals", json=referral_body(_external_id()))).json()
    assert (await owner.client.get(f"/v1/referrals/{created['id']}")).status_code == 200
    for response in (
        await stranger.client.get(f"/v1/referrals/{created['id']}"),
        await stranger.client.post(
            f"/v1/referrals/{created['id']}/cancel", json={"reason": "patient_left"}
        ),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    listed = (await stranger.client.get("/v1/referrals")).json()
    assert created["id"] not in {item["id"] for item in listed["items"]}


async def test_cancel_withdraws_the_referral_once_and_announces_it(
    hospital: HospitalFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    ed = await hospital()
    created = (await ed.client.post("/v1/referrals", json=referral_body(_external_id()))).json()
    url = f"/v1/referrals/{created['id']}/cancel"

    missing_reason = await ed.client.post(url, json={})
    assert missing_reason.status_code == 422
    assert missing_reason.json()["error"]["fields"][0]["field"] == "reason"

    cancelled = await ed.client.post(url, json={"reason": "patient_left"})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_reason"] == "patient_left"
    assert [s["status"] for s in cancelled.json()["timeline"]] == ["received", "cancelled"]

    again = await ed.client.post(url, json={"reason": "patient_left"})
    assert again.status_code == 200
    assert again.json()["timeline"] == cancelled.json()["timeline"]

    events = await _events_for(kafka_topics, created["id"], referral)
    kinds = [type(envelope.data) for _, envelope in events]
    assert kinds == [ReferralCreated, ReferralCancelled]
    assert events[1][1].data.reason == "patient_left"

    unknown = await ed.client.post(
        f"/v1/referrals/{uuid.uuid4()}/cancel", json={"reason": "patient_left"}
    )
    assert unknown.status_code == 404


async def test_a_bad_body_is_422_naming_each_field(hospital: HospitalFactory) -> None:
    ed = await hospital()
    body = referral_body(_external_id(), urgency="soon", callback_phone="555-0100")
    body["patient"]["substances"] = ["opioids", "tobacco"]
    body["patient"]["mrn"] = "123"
    response = await ed.client.post("/v1/referrals", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert {f["field"] for f in error["fields"]} == {
        "urgency",
        "callback_phone",
        "patient.substances[1]",
        "patient.mrn",
    }
    assert "123" not in response.text  # the offending values are not echoed back

    not_json = await ed.client.post(
        "/v1/referrals", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    assert not_json.json()["error"]["code"] == "invalid_request"
    [broken] = not_json.json()["error"]["fields"]
    assert broken["field"] == "body"  # it read "[1]", the offset, as a field (fresh33)
    assert broken["message"].endswith("at character 1")

    as_text = await ed.client.post(
        "/v1/referrals",
        content=json.dumps(referral_body(_external_id())).encode(),
        headers={"content-type": "text/plain"},
    )
    assert as_text.status_code == 415  # was a 422 "Input should be a valid dictionary"
    assert as_text.json()["error"]["message"] == (
        "send the body as application/json, not text/plain"
    )
    for headers, told in (  # fresh33c: both were a 422 "Input should be a valid dictionary"
        ({"content-type": "text/json"}, "not text/json"),
        ({}, "with its Content-Type header"),
    ):
        untyped = await ed.client.post(
            "/v1/referrals",
            content=json.dumps(referral_body(_external_id())).encode(),
            headers=headers,
        )
        assert untyped.status_code == 415
        assert untyped.json()["error"]["message"] == f"send the body as application/json, {told}"
    nested = await ed.client.post(  # fresh34d: a 500 from the duplicate-key check
        "/v1/referrals",
        content=b"[" * 1000 + b"]" * 1000,
        headers={"content-type": "application/json"},
    )
    assert nested.status_code == 422
    # fresh34b: a key given twice was read as its last value, the idempotency key too
    once = json.dumps(referral_body(_external_id()))
    said_twice = once.replace('"consent": ', '"consent": "declined", "consent": ', 1)
    assert said_twice != once
    twice = await ed.client.post(
        "/v1/referrals", content=said_twice, headers={"content-type": "application/json"}
    )
    assert twice.status_code == 422
    assert twice.json()["error"]["fields"][0]["field"] == "consent"
    assert (
        await ed.client.post(
            "/v1/referrals", content=once, headers={"content-type": "application/json"}
        )
    ).status_code == 201


async def test_a_body_over_64_kib_is_413(hospital: HospitalFactory) -> None:
    ed = await hospital()
    body = referral_body(_external_id(), notes="x" * 70_000)
    response = await ed.client.post("/v1/referrals", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> Any:
        for _ in range(70):
            yield b"x" * 1024

    streamed = await ed.client.post(
        "/v1/referrals", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


async def test_listing_pages_through_the_sites_referrals_by_cursor(
    hospital: HospitalFactory,
) -> None:
    ed = await hospital()
    ids = []
    for _ in range(5):
        response = await ed.client.post("/v1/referrals", json=referral_body(_external_id()))
        ids.append(response.json()["id"])
    await ed.client.post(f"/v1/referrals/{ids[0]}/cancel", json={"reason": "patient_left"})

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await ed.client.get("/v1/referrals", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids

    cancelled = (await ed.client.get("/v1/referrals", params={"status": "cancelled"})).json()
    assert [item["id"] for item in cancelled["items"]] == [ids[0]]
    future = await ed.client.get("/v1/referrals", params={"since": "2999-01-01T00:00:00Z"})
    assert future.json()["items"] == []

    bad = await ed.client.get("/v1/referrals", params={"cursor": "garbage"})
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "cursor"
    naive = await ed.client.get("/v1/referrals", params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 422
    for edge in ("0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"):  # a 500 (fresh33b)
        outside = await ed.client.get("/v1/referrals", params={"since": edge})
        assert outside.status_code == 422, outside.text
        assert outside.json()["error"]["fields"][0]["field"] == "since"
    assert (await ed.client.get("/v1/referrals", params={"limit": 0})).status_code == 422


async def test_operations_endpoints(hospital: HospitalFactory, referral: ReferralRuntime) -> None:
    ed = await hospital()
    await ed.client.post("/v1/referrals", json=referral_body(_external_id()))
    assert (await ed.client.get("/healthz")).json() == {
        "status": "ok",
        "checks": {"loops": True, "consumer": True},
    }

    # Probed as an orchestrator does, again until a deadline: on a machine shared with two
    # other test processes a loop of this in-process runtime can miss one expected cycle.
    async def ready() -> httpx.Response | None:
        response = await ed.client.get("/readyz")
        return response if response.status_code == 200 else None

    answer = await eventually(ready, within=30, what="/readyz 200", interval=0.5)
    assert answer.json()["checks"] == {"database": True, "kafka": True, "loops": True}
    metrics = (await ed.client.get("/metrics")).text
    assert (
        f'handoff_referrals_received_total{{site="{ed.site.site_id}",state="MD",'
        'urgency="urgent"} 1.0'
    ) in metrics
    assert 'handoff_http_request_duration_seconds_bucket{le="0.05",method="POST",' in metrics
    assert 'route="/v1/referrals",status="201"' in metrics
    assert "handoff_outbox_pending_events" in metrics
    docs = await ed.client.get("/docs")
    assert docs.status_code == 200
    spec = (await ed.client.get("/openapi.json")).json()
    assert "/v1/referrals/{referral_id}/cancel" in spec["paths"]
