"""SMS and voice through Twilio's REST API (or anything that speaks it, such as a test double).

Requests are the form-encoded `Messages` and `Calls` resources; errors are read
from Twilio's JSON error body and its numeric codes. Inbound webhooks are checked
with Twilio's own request validator.
"""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode
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

# The query parameter of a send's StatusCallback URL naming notify's message: Twilio calls
# the URL as given, signed, so every report names the message even when the send's own
# answer (its SID) was never stored.
PAGE_PARAM = "page"

# A lookup reads Twilio's list newest first, a page at a time, back to this long before the
# send began (clocks differ), and at most this many pages.
LOOKUP_CLOCK_SKEW = timedelta(minutes=5)
LOOKUP_MAX_PAGES = 20
LOOKUP_PAGE_SIZE = 100

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
        form["StatusCallback"] = status_callback(self.status_callback_url, message)
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
        """Find the send begun at `since` (UTC) in Twilio's list of messages (or calls) to
        its destination. An SMS is the one with its exact body, which carries the offer's
        own link; a call (Twilio keeps no body for one) is any call to the number since.
        Reads every page, newest first, back to `since` less LOOKUP_CLOCK_SKEW, not only the
        first: a busy coach's phone has many.

        Raises httpx.HTTPError when Twilio cannot be asked."""
        resource, key = (
            ("Calls.json", "calls")
            if message.channel is Channel.VOICE
            else ("Messages.json", "messages")
        )
        oldest = since - LOOKUP_CLOCK_SKEW
        url = resource
        params: dict[str, str] | None = {
            "To": message.destination,
            "PageSize": str(LOOKUP_PAGE_SIZE),
        }
        for _ in range(LOOKUP_MAX_PAGES):
            response = await self._client.get(url, params=params)
            response.raise_for_status()
            body = response.json()
            for record in body.get(key, []):
                created = _created(record)
                if created < oldest:
                    return NotFound()
                if message.channel is Channel.VOICE or record.get("body") == message.content.text:
                    return Found(record["sid"], record.get("status") in DELIVERED_STATUSES)
            following = body.get("next_page_uri")  # an absolute path with its own query
            if not following:
                break
            # None, not {}: httpx replaces a URL's query with any params given.
            url, params = str(self._client.base_url.join(str(following))), None
        return NotFound()

    async def close(self) -> None:
        await self._client.aclose()


def status_callback(base_url: str, message: Outgoing) -> str:
    """The StatusCallback URL of one send: `base_url` naming the message in PAGE_PARAM."""
    return f"{base_url}?{urlencode({PAGE_PARAM: str(message.message_id)})}"


def _created(record: Mapping[str, Any]) -> datetime:
    """When Twilio created the record (RFC 2822 `date_created`, UTC)."""
    try:
        return parsedate_to_datetime(str(record["date_created"]))
    except (KeyError, TypeError, ValueError):
        return datetime.max.replace(tzinfo=UTC)  # undated: never ends the search early


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
