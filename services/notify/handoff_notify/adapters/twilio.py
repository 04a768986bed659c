"""SMS and voice through Twilio's REST API (or anything that speaks it, such as a test double).

Requests are the form-encoded `Messages` and `Calls` resources; errors are read
from Twilio's JSON error body and its numeric codes. Inbound webhooks are checked
with Twilio's own request validator.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import httpx
from twilio.request_validator import RequestValidator

from handoff_notify.adapters.providers import Outgoing
from handoff_notify.domain.delivery import (
    Accepted,
    Ambiguous,
    Found,
    LookupOutcome,
    NotFound,
    Permanent,
    SendOutcome,
    Transient,
)
from handoff_schemas.vocabulary import Channel, PageFailure

# Twilio error codes that no retry will cure, and what they mean for the coach's number.
PERMANENT_ERRORS: Mapping[int, PageFailure] = {
    21211: PageFailure.INVALID_DESTINATION,  # invalid 'To' number
    21214: PageFailure.INVALID_DESTINATION,  # 'To' number cannot be reached
    21217: PageFailure.INVALID_DESTINATION,  # phone number does not appear to be valid
    21408: PageFailure.INVALID_DESTINATION,  # permission to send to this region not enabled
    21610: PageFailure.UNSUBSCRIBED,  # the recipient replied STOP
    21612: PageFailure.INVALID_DESTINATION,  # the 'To' number is not reachable by this route
    21614: PageFailure.INVALID_DESTINATION,  # 'To' is not a mobile number
}

# Codes saying no message to this number will ever be delivered: the contact method is
# marked unreachable at once, so nothing more is sent to it until a coordinator fixes it
# (or the coach texts START, for 21610).
NEVER_DELIVERABLE = frozenset({21211, 21214, 21217, 21610, 21614})

# Twilio's delivery statuses, from status callbacks, that end a message.
DELIVERED_STATUSES = frozenset({"delivered", "completed"})
FAILED_STATUSES = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled"})


class TwilioProvider:
    def __init__(
        self,
        *,
        base_url: str,
        account_sid: str,
        auth_token: str,
        from_number: str,
        status_callback_url: str,
        timeout: float,
    ) -> None:
        self.from_number = from_number
        self.status_callback_url = status_callback_url
        self._client = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/",
            auth=(account_sid, auth_token),
            timeout=timeout,
        )

    async def send(self, message: Outgoing) -> SendOutcome:
        form = {"To": message.destination, "From": self.from_number}
        form["StatusCallback"] = self.status_callback_url
        if message.channel is Channel.VOICE:
            resource, form["Twiml"] = "Calls.json", _call_script(message)
        else:
            resource, form["Body"] = "Messages.json", message.content.text
        try:
            response = await self._client.post(resource, data=form)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            return Transient(type(error).__name__)  # the request never left
        except httpx.TransportError as error:
            return Ambiguous(type(error).__name__)  # it left; its fate is unknown
        return outcome_of(response)

    async def lookup(self, message: Outgoing, since: datetime) -> LookupOutcome:
        if message.channel is Channel.VOICE:
            resource, params, key = "Calls.json", {"To": message.destination}, "calls"
            params["StartTime>"] = since.date().isoformat()
        else:
            resource, params, key = "Messages.json", {"To": message.destination}, "messages"
            params["DateSent>"] = since.date().isoformat()
        response = await self._client.get(resource, params=params)
        response.raise_for_status()
        for record in response.json().get(key, []):
            same_text = message.channel is Channel.VOICE or record.get("body") == (
                message.content.text
            )
            if same_text:
                return Found(record["sid"], record.get("status") in DELIVERED_STATUSES)
        return NotFound()

    async def close(self) -> None:
        await self._client.aclose()


def outcome_of(response: httpx.Response) -> SendOutcome:
    if response.is_success:
        return Accepted(response.json()["sid"])
    code = _error_code(response)
    if response.status_code == 429:
        return Transient(f"http_429:{code}", _retry_after(response))
    if response.status_code >= 500:
        return Transient(f"http_{response.status_code}:{code}")
    failure = PERMANENT_ERRORS.get(code or 0, PageFailure.PROVIDER_ERROR)
    return Permanent(failure, f"http_{response.status_code}:{code}", code in NEVER_DELIVERABLE)


def _error_code(response: httpx.Response) -> int | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _call_script(message: Outgoing) -> str:
    """TwiML for a page by voice: say the page, take one keypad digit."""
    said = escape(message.content.spoken)
    return (
        f"<Response><Gather numDigits={quoteattr('1')} action={quoteattr(message.answer_url)} "
        f"method={quoteattr('POST')}><Say>{said}</Say></Gather>"
        f"<Say>No answer was recorded. Goodbye.</Say></Response>"
    )


def signature_valid(auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    """Whether a webhook request carries Twilio's signature for this URL and these fields."""
    return bool(RequestValidator(auth_token).validate(url, dict(params), signature))
