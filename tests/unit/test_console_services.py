"""How the console reads the services' answers: a refusal's fields go next to the form's
fields; a service away or failing is ServiceUnavailable, never a 500 page."""

import httpx
import pytest
from pydantic import SecretStr

from handoff_console.adapters.services import AdminApi, Endpoint, Refused, ServiceUnavailable


def api(handler: httpx.MockTransport) -> AdminApi:
    client = httpx.AsyncClient(transport=handler)
    return AdminApi(client, Endpoint("matching", "http://matching", SecretStr("t0ken")))


async def test_a_refusal_names_each_field_the_service_named() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t0ken"
        body = {
            "error": {
                "code": "invalid_request",
                "message": "invalid: ends_at, participants",
                "fields": [
                    {"field": "participants", "code": "unknown_coach", "message": "no such coach"},
                    {"field": "ends_at", "code": "value_error", "message": "must be later"},
                ],
            }
        }
        return httpx.Response(422, json=body)

    with pytest.raises(Refused) as refused:
        await api(httpx.MockTransport(refuse)).call("POST", "/v1/admin/rotations", json={})
    assert refused.value.status == 422
    assert refused.value.fields == {"participants": "no such coach", "ends_at": "must be later"}


async def test_a_refusal_without_a_json_body_still_says_what_happened() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(409, text="conflict"))
    with pytest.raises(Refused) as refused:
        await api(transport).call("POST", "/v1/admin/rotations", json={})
    assert refused.value.fields == {}
    assert refused.value.message == "Conflict"


@pytest.mark.parametrize("status", [500, 503])
async def test_a_failing_service_is_unavailable(status: int) -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(status))
    with pytest.raises(ServiceUnavailable, match="the matching service is not answering"):
        await api(transport).call("GET", "/v1/admin/coaches")


async def test_a_service_that_does_not_answer_is_unavailable() -> None:
    def away(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServiceUnavailable):
        await api(httpx.MockTransport(away)).call("GET", "/v1/admin/coaches")


async def test_no_content_is_none() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(204))
    assert await api(transport).call("DELETE", "/v1/admin/layers/x") is None


async def test_an_answer_that_is_not_json_is_unavailable_not_a_500() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, text="<html>proxy</html>"))
    with pytest.raises(ServiceUnavailable):
        await api(transport).call("GET", "/v1/admin/coaches")


async def test_a_file_goes_as_its_own_bytes_and_type() -> None:
    seen: list[httpx.Request] = []

    def take(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"layer_id": "x", "shifts": 1})

    answer = await api(httpx.MockTransport(take)).call(
        "POST",
        "/v1/admin/calendars/import",
        params={"pool": "state:MD", "name": "cover"},
        content=b"BEGIN:VCALENDAR\r\n",
        content_type="text/calendar",
    )
    assert answer == {"layer_id": "x", "shifts": 1}
    [request] = seen
    assert request.content == b"BEGIN:VCALENDAR\r\n"
    assert request.headers["content-type"] == "text/calendar"
    assert request.headers["authorization"] == "Bearer t0ken"
    assert request.url.params["pool"] == "state:MD"
