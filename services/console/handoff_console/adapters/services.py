"""The three services' admin HTTP APIs, as the console calls them. The console reads no
other service's tables: what it shows and changes goes through these calls."""

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr


class ServiceUnavailable(Exception):
    """A service did not answer, or answered 5xx: the page says which, and to retry."""

    def __init__(self, service: str) -> None:
        super().__init__(f"the {service} service is not answering")
        self.service = service


class Refused(Exception):
    """A service refused a change (4xx): `fields` maps a field (as the service names it,
    e.g. `participants`, `ends_at`) to its message; `message` is the whole answer's."""

    def __init__(self, status: int, message: str, fields: dict[str, str]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


@dataclass(frozen=True)
class Endpoint:
    service: str
    url: str
    token: SecretStr | None


class AdminApi:
    """One service's admin API over a shared HTTP client; JSON in and out."""

    def __init__(self, client: httpx.AsyncClient, endpoint: Endpoint) -> None:
        self._client = client
        self._endpoint = endpoint

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        """The decoded answer (None for 204): a JSON body (`json`) or raw bytes (`content`,
        sent as `content_type`, e.g. an .ics file). Raises ServiceUnavailable (no answer,
        5xx), Refused (4xx, with the fields the service named)."""
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self._endpoint.token is not None:
            headers["Authorization"] = f"Bearer {self._endpoint.token.get_secret_value()}"
        try:
            response = await self._client.request(
                method,
                f"{self._endpoint.url.rstrip('/')}{path}",
                json=json,
                params=params,
                content=content,
                headers=headers,
            )
        except httpx.HTTPError:
            raise ServiceUnavailable(self._endpoint.service) from None
        if response.status_code >= 500:
            raise ServiceUnavailable(self._endpoint.service)
        if response.status_code >= 400:
            raise _refusal(response)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:  # a proxy's page, a half-written answer: not an answer to use
            raise ServiceUnavailable(self._endpoint.service) from None


def _refusal(response: httpx.Response) -> Refused:
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {}
    fields = {
        str(f.get("field", "")): str(f.get("message", "")) for f in error.get("fields", []) or []
    }
    return Refused(response.status_code, str(error.get("message", response.reason_phrase)), fields)


@dataclass
class Services:
    """The admin APIs the console drives; `reports` None when no reports service is
    configured (its page then says the service is not answering)."""

    referral: AdminApi
    matching: AdminApi
    notify: AdminApi
    reports: AdminApi | None = None

    @classmethod
    def over(cls, client: httpx.AsyncClient, *endpoints: Endpoint) -> "Services":
        apis = {e.service: AdminApi(client, e) for e in endpoints}
        return cls(apis["referral"], apis["matching"], apis["notify"], apis.get("reports"))
