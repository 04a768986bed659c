"""A hospital's FHIR client against the referral service on real Kafka and PostgreSQL:
SMART Backend Services tokens, BSeR ServiceRequest + Task in, the Task's status back."""

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from faststream.kafka import KafkaBroker

from handoff_devenv.ports import free_ports
from handoff_platform.kafka import make_broker
from handoff_referral import SCHEMA
from handoff_referral.adapters import fhir_store
from handoff_referral.app import ReferralRuntime
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    ReferralCancelled,
    ReferralCreated,
)
from handoff_schemas.vocabulary import CoachResponse, Urgency
from tests.integration.conftest import outbox_empty, register_site
from tests.support.events import coach_assigned, coach_responded, offer_made
from tests.support.fhir import ClientKeys, service_request, task, token_form, transaction_bundle
from tests.support.kafka import read_topic, send
from tests.support.patients import NOTES
from tests.support.stored_rows import leaks, stored_rows
from tests.support.waiting import eventually

BASE = "http://referral/fhir/r4"
TOKEN_URL = f"{BASE}/token"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@dataclass
class FhirClient:
    """A site's registered FHIR client, speaking to the service over HTTP."""

    site_id: str
    client_id: str
    keys: ClientKeys
    http: httpx.AsyncClient

    async def token(self, alg: str = "RS384") -> str:
        assertion = self.keys.assertion(self.client_id, TOKEN_URL, alg=alg)
        response = await self.http.post("/fhir/r4/token", data=token_form(assertion))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def authorised(self, alg: str = "RS384") -> None:
        self.http.headers["Authorization"] = f"Bearer {await self.token(alg)}"


FhirClientFactory = Callable[[], Awaitable[FhirClient]]


@pytest.fixture
async def fhir_client(referral: ReferralRuntime) -> AsyncIterator[FhirClientFactory]:
    clients: list[httpx.AsyncClient] = []

    async def make() -> FhirClient:
        site, _, _ = await register_site(referral)
        keys = ClientKeys()
        client_id = f"hfc_{uuid.uuid4().hex[:16]}"
        async with referral.pool.acquire() as connection:
            await fhir_store.add_client(
                connection, client_id, site.site_id, "tests", keys.public_jwks(), None
            )
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=referral.app), base_url="http://referral"
        )
        clients.append(http)
        return FhirClient(site.site_id, client_id, keys, http)

    yield make
    for http in clients:
        await http.aclose()


@pytest.fixture
async def other_services(kafka_topics: str) -> AsyncIterator[KafkaBroker]:
    """A producer standing in for matching and notify, which publish these events."""
    broker = make_broker(kafka_topics, client_id="fhir-stand-in-for-matching-and-notify")
    async with broker:
        yield broker


def _external_id() -> str:
    return f"ORD-{uuid.uuid4().hex[:10]}"


async def _task_is(client: FhirClient, task_id: str, status: str, business: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await client.http.get(f"/fhir/r4/Task/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        codes = [c["code"] for c in body["businessStatus"]["coding"]]
        return body if body["status"] == status and codes[0] == business else None

    return await eventually(probe, within=30, what=f"Task {status} / {business}")


async def test_metadata_and_smart_configuration_advertise_the_token_endpoint(
    fhir_client: FhirClientFactory,
) -> None:
    client = await fhir_client()
    metadata = await client.http.get("/fhir/r4/metadata")
    assert metadata.status_code == 200
    assert metadata.headers["content-type"].startswith("application/fhir+json")
    capability = metadata.json()
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"] == "4.0.1"
    oauth = capability["rest"][0]["security"]["extension"][0]["extension"]
    assert oauth == [{"url": "token", "valueUri": TOKEN_URL}]

    smart = (await client.http.get("/fhir/r4/.well-known/smart-configuration")).json()
    assert smart["token_endpoint"] == TOKEN_URL
    assert smart["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(smart["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_a_signed_assertion_gets_a_short_lived_system_token(
    fhir_client: FhirClientFactory, alg: str
) -> None:
    client = await fhir_client()
    assertion = client.keys.assertion(client.client_id, TOKEN_URL, alg=alg)
    response = await client.http.post(
        "/fhir/r4/token",
        data=token_form(
            assertion, "system/ServiceRequest.write system/Task.read system/Patient.read"
        ),
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/ServiceRequest.write system/Task.read"
    assert "refresh_token" not in body

    # The token opens what its scopes say, and no more: Task.read does not create Tasks.
    headers = {"Authorization": f"Bearer {body['access_token']}", **FHIR_JSON}
    missing = await client.http.get(f"/fhir/r4/Task/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404
    refused = await client.http.post(
        "/fhir/r4/Task", json=task("ServiceRequest/x"), headers=headers
    )
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"


async def test_service_request_and_task_follow_the_referral_to_completion(
    fhir_client: FhirClientFactory,
    other_services: KafkaBroker,
    referral: ReferralRuntime,
    kafka_topics: str,
) -> None:
    client = await fhir_client()
    await client.authorised("ES384")
    external_id = _external_id()
    created = await client.http.post(
        "/fhir/r4/ServiceRequest", json=service_request(external_id), headers=FHIR_JSON
    )
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith("application/fhir+json")
    referral_id = created.json()["id"]
    assert created.headers["location"] == f"/fhir/r4/ServiceRequest/{referral_id}"
    assert "Quentin" not in created.text
    assert NOTES not in created.text

    # The same ServiceRequest again is the same referral.
    again = await client.http.post(
        "/fhir/r4/ServiceRequest", json=service_request(external_id), headers=FHIR_JSON
    )
    assert (again.status_code, again.json()["id"]) == (200, referral_id)
    # Until the Task is posted there is no Task to read.
    assert (await client.http.get(f"/fhir/r4/Task/{referral_id}")).status_code == 404

    posted = await client.http.post(
        "/fhir/r4/Task", json=task(f"ServiceRequest/{referral_id}"), headers=FHIR_JSON
    )
    assert posted.status_code == 201, posted.text
    body = posted.json()
    assert body["id"] == referral_id
    assert (body["status"], body["businessStatus"]["coding"][0]["code"]) == ("received", "2.0")
    assert body["identifier"] == [
        {"system": "urn:oid:2.16.840.1.113883.3.42", "value": external_id}
    ]
    assert "for" not in body  # the Task read carries no patient data

    # What matching receives is what the REST intake would have sent.
    await eventually(lambda: outbox_empty(referral), within=30, what="the outbox to drain")
    records = [
        r for r in await read_topic(kafka_topics, Topic.REFERRALS) if r.key == referral_id.encode()
    ]
    for record in records:
        for phi in ("Quentin", "Zebulon", "1961-07-04", NOTES):
            assert phi not in record.value.decode()
    events = [decode_event(r.value) for r in records]
    [event] = [e for e in events if isinstance(e.data, ReferralCreated)]
    assert event.data.site.site_id == client.site_id
    assert (event.data.urgency, event.data.location) == (Urgency.URGENT, "ED bay 4")
    assert event.data.callback_phone == "+14105550100"
    assert (event.data.preferred_language, event.data.interpreter_needed) == ("es", True)
    assert sorted(event.data.substances) == ["alcohol", "opioids"]
    assert event.data.consent.value == "obtained"

    coach_id, offer_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    rid = uuid.UUID(referral_id)
    offer = offer_made(rid, coach_id=coach_id, offer_id=offer_id, site_id=client.site_id)
    await send(other_services, offer)
    await send(other_services, coach_assigned(rid, offer_id, coach_id, now + timedelta(seconds=1)))
    await _task_is(client, referral_id, "accepted", "3.0")
    arrived = now + timedelta(seconds=2)
    await send(
        other_services, coach_responded(rid, offer_id, coach_id, CoachResponse.ARRIVED, arrived)
    )
    await _task_is(client, referral_id, "in-progress", "5.1.1")
    completed = now + timedelta(seconds=3)
    await send(
        other_services, coach_responded(rid, offer_id, coach_id, CoachResponse.COMPLETED, completed)
    )
    done = await _task_is(client, referral_id, "completed", "7.0")
    steps = [o["type"]["coding"][0]["code"] for o in done["output"]]
    assert steps == ["received", "offered", "accepted", "arrived", "completed"]

    # A completed referral cannot be cancelled any more.
    late = await client.http.patch(
        f"/fhir/r4/Task/{referral_id}",
        json=[{"op": "replace", "path": "/status", "value": "cancelled"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert late.status_code == 409
    assert late.json()["issue"][0]["expression"] == ["Task.status"]


async def test_a_transaction_bundle_makes_the_referral_and_a_patch_cancels_it(
    fhir_client: FhirClientFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    client = await fhir_client()
    await client.authorised()
    external_id = _external_id()
    response = await client.http.post(
        "/fhir/r4", json=transaction_bundle(external_id), headers=FHIR_JSON
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in answer["entry"]]
    assert statuses == ["200 OK", "200 OK", "201 Created", "201 Created"]
    task_view = answer["entry"][3]["resource"]
    referral_id = task_view["id"]
    # Minimum necessary: of the Patient entry only the language and interpreter need stay.
    async with referral.pool.acquire() as connection:
        stored = await connection.fetchval(
            "SELECT patient::text FROM referral.referrals WHERE referral_id = $1",
            uuid.UUID(referral_id),
        )
    assert json.loads(stored)["preferred_language"] == "es"
    for phi in ("Quentin", "Zebulon", "1961-07-04"):
        assert phi not in stored
    assert answer["entry"][2]["response"]["location"] == f"ServiceRequest/{referral_id}"

    # The same Bundle again: the same referral, nothing new.
    replay = await client.http.post(
        "/fhir/r4", json=transaction_bundle(external_id), headers=FHIR_JSON
    )
    assert replay.json()["entry"][3]["resource"]["id"] == referral_id
    assert replay.json()["entry"][2]["response"]["status"] == "200 OK"

    found = await client.http.get(
        "/fhir/r4/Task",
        params={"identifier": f"urn:oid:2.16.840.1.113883.3.42|{external_id}"},
    )
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [referral_id]
    other_system = await client.http.get(
        "/fhir/r4/Task", params={"identifier": f"urn:oid:1.2.3|{external_id}"}
    )
    assert other_system.json()["total"] == 0

    patch = [
        {"op": "test", "path": "/status", "value": "received"},
        {"op": "replace", "path": "/status", "value": "cancelled"},
        {
            "op": "add",
            "path": "/statusReason",
            "value": {"coding": [{"system": "urn:handoff:cancel-reason", "code": "patient_left"}]},
        },
    ]
    cancelled = await client.http.patch(
        f"/fhir/r4/Task/{referral_id}",
        json=patch,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["businessStatus"]["coding"][0]["code"]) == ("cancelled", "6.0")
    assert body["statusReason"]["coding"][0]["code"] == "patient_left"

    await eventually(lambda: outbox_empty(referral), within=30, what="the outbox to drain")
    events = [
        decode_event(r.value).data
        for r in await read_topic(kafka_topics, Topic.REFERRALS)
        if r.key == referral_id.encode()
    ]
    assert [type(e) for e in events] == [ReferralCreated, ReferralCancelled]
    assert events[1].reason.value == "patient_left"


async def test_another_sites_task_is_not_found(fhir_client: FhirClientFactory) -> None:
    ours, theirs = await fhir_client(), await fhir_client()
    await ours.authorised()
    await theirs.authorised()
    response = await theirs.http.post(
        "/fhir/r4", json=transaction_bundle(_external_id()), headers=FHIR_JSON
    )
    their_task = response.json()["entry"][3]["resource"]["id"]

    read = await ours.http.get(f"/fhir/r4/Task/{their_task}")
    assert read.status_code == 404
    assert read.json()["issue"][0]["code"] == "not-found"
    patch = await ours.http.patch(
        f"/fhir/r4/Task/{their_task}",
        json=[{"op": "replace", "path": "/status", "value": "cancelled"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patch.status_code == 404
    focus = await ours.http.post(
        "/fhir/r4/Task", json=task(f"ServiceRequest/{their_task}"), headers=FHIR_JSON
    )
    assert focus.status_code == 422
    assert (await theirs.http.get(f"/fhir/r4/Task/{their_task}")).json()["status"] == "received"


async def _token_error(client: FhirClient, assertion: str) -> dict[str, Any]:
    response = await client.http.post("/fhir/r4/token", data=token_form(assertion))
    assert response.status_code == 401, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == "invalid_client"
    return body


async def test_replayed_expired_far_future_misaddressed_and_unknown_key_assertions_are_refused(
    fhir_client: FhirClientFactory,
) -> None:
    client = await fhir_client()
    jti = f"once-{uuid.uuid4().hex}"
    once = client.keys.assertion(client.client_id, TOKEN_URL, jti=jti)
    first = await client.http.post("/fhir/r4/token", data=token_form(once))
    assert first.status_code == 200
    assert "jti" in (await _token_error(client, once))["error_description"]
    # A new assertion with the same jti is a replay too.
    reused = client.keys.assertion(client.client_id, TOKEN_URL, alg="ES384", jti=jti)
    assert "jti" in (await _token_error(client, reused))["error_description"]

    expired = client.keys.assertion(client.client_id, TOKEN_URL, expires_in=-120)
    assert "expired" in (await _token_error(client, expired))["error_description"]
    far = client.keys.assertion(client.client_id, TOKEN_URL, expires_in=3600)
    assert "5 minutes" in (await _token_error(client, far))["error_description"]
    wrong_aud = client.keys.assertion(client.client_id, "https://elsewhere.example/token")
    assert "aud" in (await _token_error(client, wrong_aud))["error_description"]
    unknown_kid = client.keys.assertion(client.client_id, TOKEN_URL, kid="not-registered")
    assert "kid" in (await _token_error(client, unknown_kid))["error_description"]
    # Signed by a key the client never registered, under a registered kid.
    stranger = ClientKeys().assertion(client.client_id, TOKEN_URL)
    assert "signature" in (await _token_error(client, stranger))["error_description"]

    metrics = (await client.http.get("/metrics")).text
    assert 'route="/fhir/r4/token",status="401"' in metrics
    for outcome in ("jti_reused", "expired", "far_future", "wrong_audience", "unknown_kid"):
        assert f'handoff_fhir_token_requests_total{{outcome="{outcome}"}}' in metrics


async def test_bad_resources_get_an_operation_outcome_naming_the_element(
    fhir_client: FhirClientFactory,
) -> None:
    client = await fhir_client()
    await client.authorised()
    bad = service_request(_external_id())
    bad["intent"] = "plan"
    bad["reasonCode"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}]
    del bad["supportingInfo"]
    response = await client.http.post("/fhir/r4/ServiceRequest", json=bad, headers=FHIR_JSON)
    assert response.status_code == 422
    expressions = {e for i in response.json()["issue"] for e in i.get("expression", [])}
    assert expressions == {
        "ServiceRequest.intent",
        "ServiceRequest.reasonCode",
        "ServiceRequest.supportingInfo",
    }

    malformed = service_request(_external_id())
    malformed["reasonCode"] = [{"coding": [{"code": 42}]}]
    response = await client.http.post("/fhir/r4/ServiceRequest", json=malformed, headers=FHIR_JSON)
    assert response.status_code == 400
    [issue] = response.json()["issue"]
    assert issue["expression"] == ["ServiceRequest.reasonCode[0].coding[0].code"]

    # fresh34b: a property given twice was read as its last value
    twice = json.dumps(service_request(_external_id())).replace(
        '"intent": ', '"intent": "plan", "intent": ', 1
    )
    response = await client.http.post("/fhir/r4/ServiceRequest", content=twice, headers=FHIR_JSON)
    assert response.status_code == 400
    [issue] = response.json()["issue"]
    assert (issue["code"], issue["diagnostics"]) == (
        "structure",
        "the property 'intent' is given twice in one object",
    )

    no_token = await client.http.post(
        "/fhir/r4/ServiceRequest",
        json=service_request(_external_id()),
        headers={**FHIR_JSON, "Authorization": "Bearer hft_nope"},
    )
    assert no_token.status_code == 401
    assert no_token.json()["resourceType"] == "OperationOutcome"


async def test_every_refusal_under_the_fhir_base_is_an_operation_outcome(
    fhir_client: FhirClientFactory,
) -> None:
    client = await fhir_client()
    await client.authorised()
    huge = service_request(_external_id())
    huge["note"] = [{"text": "x" * (2 * 1024 * 1024)}]
    too_large = await client.http.post("/fhir/r4/ServiceRequest", json=huge, headers=FHIR_JSON)
    assert too_large.status_code == 413
    assert too_large.json()["resourceType"] == "OperationOutcome"
    assert "65536 bytes" in too_large.json()["issue"][0]["diagnostics"]
    for method, path in [("GET", "/fhir/r4"), ("GET", "/fhir/r4/Nope"), ("DELETE", "/fhir/r4/")]:
        refused = await client.http.request(method, path)
        assert refused.status_code in (404, 405), (method, path, refused.text)
        assert refused.json()["resourceType"] == "OperationOutcome", (method, path)
    # The REST API keeps its own shape.
    rest = await client.http.post("/v1/referrals", content=b"x" * 70000)
    assert rest.json()["error"]["code"] == "payload_too_large"


async def test_the_service_requests_note_is_stored_nowhere(
    fhir_client: FhirClientFactory, referral: ReferralRuntime
) -> None:
    """ServiceRequest.note is free text the ED may fill with PHI: no row of any table of the
    referral schema holds it, whether the ServiceRequest comes alone or in a Bundle."""
    client = await fhir_client()
    await client.authorised()
    note = f"Free text {uuid.uuid4().hex}: Quentin Zebulon's sister, 410 555 0199"
    alone, bundled = _external_id(), _external_id()
    resource = service_request(alone) | {"note": [{"text": note}, {"text": note + " again"}]}
    created = await client.http.post("/fhir/r4/ServiceRequest", json=resource, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    bundle = transaction_bundle(bundled)
    bundle["entry"][2]["resource"]["note"] = [{"text": note}]
    assert (await client.http.post("/fhir/r4", json=bundle, headers=FHIR_JSON)).status_code == 200

    async with referral.pool.acquire() as connection:
        rows = await stored_rows(connection, SCHEMA)
    # The scan sees both referrals (it reads what was stored), and no note in any table.
    assert [table for table, *_ in leaks(rows, [alone, bundled])].count("referrals") == 2
    assert not leaks(rows, [note, note[:40]])
    assert note not in created.text


async def test_a_service_request_by_id_answers_405_for_every_method(
    fhir_client: FhirClientFactory,
) -> None:
    """Only create is offered on ServiceRequest (the Task is what is read and patched): any
    method on ServiceRequest/{id}, the Location a create answers with, is a 405
    OperationOutcome saying so, not a 404 that reads as a lost referral."""
    client = await fhir_client()
    await client.authorised()
    created = await client.http.post(
        "/fhir/r4/ServiceRequest", json=service_request(_external_id()), headers=FHIR_JSON
    )
    location = created.headers["location"]
    for method in ("GET", "PUT", "PATCH", "DELETE", "POST"):
        for path in (location, "/fhir/r4/ServiceRequest/not-a-uuid"):
            refused = await client.http.request(method, path, json={}, headers=FHIR_JSON)
            assert refused.status_code == 405, (method, path, refused.text)
            assert refused.headers["content-type"].startswith("application/fhir+json")
            [issue] = refused.json()["issue"]
            assert (issue["code"], issue["expression"]) == ("not-supported", ["ServiceRequest"])
            assert "Task" in issue["diagnostics"]
            assert refused.headers["allow"] == ""


async def test_a_loose_boolean_is_refused_and_an_over_long_location_cut(
    fhir_client: FhirClientFactory, referral: ReferralRuntime
) -> None:
    client = await fhir_client()
    await client.authorised()
    loose = service_request(_external_id())
    loose["contained"][0]["extension"][0]["valueBoolean"] = "yes"
    refused = await client.http.post("/fhir/r4/ServiceRequest", json=loose, headers=FHIR_JSON)
    assert refused.status_code == 422
    [issue] = refused.json()["issue"]
    assert issue["expression"] == ["ServiceRequest.contained[0].extension[0].valueBoolean"]

    external_id = _external_id()
    long = service_request(external_id)
    long["contained"][3]["name"] = "N" * 5000
    created = await client.http.post("/fhir/r4/ServiceRequest", json=long, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    async with referral.pool.acquire() as connection:
        location = await connection.fetchval(
            "SELECT location FROM referral.referrals WHERE site_id = $1 AND external_id = $2",
            client.site_id,
            external_id,
        )
    assert location == "N" * 40


async def test_keys_published_at_a_jwks_url_are_fetched_when_a_token_is_asked(
    referral: ReferralRuntime,
) -> None:
    keys = ClientKeys()
    served: list[str] = []

    async def jwks(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.json_response(keys.public_jwks())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stopped = False
    try:
        site, _, _ = await register_site(referral)
        client_id = f"hfc_{uuid.uuid4().hex[:16]}"
        async with referral.pool.acquire() as connection:
            await fhir_store.add_client(
                connection,
                client_id,
                site.site_id,
                "tests",
                None,
                f"http://127.0.0.1:{port}/.well-known/jwks.json",
            )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=referral.app), base_url="http://referral"
        ) as http:
            assertion = keys.assertion(client_id, TOKEN_URL, alg="ES384")
            response = await http.post("/fhir/r4/token", data=token_form(assertion))
            assert response.status_code == 200, response.text
            assert served == ["/.well-known/jwks.json"]

            await runner.cleanup()  # the site's key server is down: no token, and no 5xx
            stopped = True
            assertion = keys.assertion(client_id, TOKEN_URL, alg="ES384")
            response = await http.post("/fhir/r4/token", data=token_form(assertion))
            assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    finally:
        if not stopped:
            await runner.cleanup()
