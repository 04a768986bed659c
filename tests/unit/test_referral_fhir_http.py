"""The FHIR app's answers when things go wrong, with the service parts stubbed: every
refusal is FHIR, and a database that is away is 503 with Retry-After, never 500."""

from typing import Any

import asyncpg
import httpx
import pytest

from handoff_referral.adapters.fhir_store import AccessGrant
from handoff_referral.entrypoints.fhir_http import fhir_app
from handoff_referral.fhir_service import FhirReferrals, SmartAuthority


class AwayDatabase(SmartAuthority):
    def __init__(self) -> None:
        pass

    async def authenticate(self, token: str) -> AccessGrant | None:
        raise asyncpg.CannotConnectNowError("the database system is starting up")

    async def issue(self, form: Any, token_url: str) -> Any:
        raise ConnectionRefusedError("connection refused")


@pytest.fixture
async def client() -> Any:
    app = fhir_app(FhirReferrals.__new__(FhirReferrals), AwayDatabase())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://h") as http:
        yield http


async def test_a_database_that_is_away_is_503_with_retry_after(client: httpx.AsyncClient) -> None:
    read = await client.get("/Task/x", headers={"Authorization": "Bearer hft_x"})
    assert read.status_code == 503
    assert read.headers["retry-after"] == "5"
    assert read.json()["issue"][0]["code"] == "transient"
    token = await client.post(
        "/token",
        data={"grant_type": "client_credentials"},
    )
    assert token.status_code == 503


async def test_unknown_routes_and_methods_are_operation_outcomes(client: httpx.AsyncClient) -> None:
    missing = await client.get("/Patient/1")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/fhir+json")
    assert missing.json()["issue"][0]["code"] == "not-found"
    wrong_method = await client.delete("/Task/1")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["resourceType"] == "OperationOutcome"
    assert "GET" in wrong_method.headers["allow"]  # Starlette names the first route's methods
    no_token = await client.get("/Task/1")
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "POST"])
async def test_a_service_request_by_id_is_405_for_every_method_not_404(
    client: httpx.AsyncClient, method: str
) -> None:
    """Only create is offered on ServiceRequest; its Location is not a dead end that reads
    as a lost referral, and the answer names what to use instead."""
    refused = await client.request(method, "/ServiceRequest/7f1c5a0e-0000-4000-8000-000000000003")
    assert refused.status_code == 405
    assert refused.headers["content-type"].startswith("application/fhir+json")
    assert refused.headers["allow"] == ""
    if method != "HEAD":
        [issue] = refused.json()["issue"]
        assert (issue["code"], issue["expression"]) == ("not-supported", ["ServiceRequest"])
        assert "Task" in issue["diagnostics"]
