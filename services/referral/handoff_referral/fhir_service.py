"""FHIR R4 use cases: SMART Backend Services tokens, and referrals in and out as BSeR
ServiceRequest / Task. Referrals are made, read and cancelled by ReferralService, the same
code the REST API uses; this adds only the FHIR side (identifier system, the posted Task)."""

import hashlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from handoff_platform.audit import Accessor
from handoff_referral.adapters import fhir_store as store
from handoff_referral.adapters.fhir_store import AccessGrant, JwksUnavailable
from handoff_referral.domain import fhir
from handoff_referral.domain.fhir import FhirError, Issue
from handoff_referral.domain.intake import storable_text
from handoff_referral.domain.referral import Referral
from handoff_referral.domain.smart import (
    ACCESS_TOKEN_LIFETIME,
    CLIENT_ASSERTION_TYPE,
    AssertionRefused,
    InvalidJwks,
    asserted_client_id,
    granted_scopes,
    verify_assertion,
)
from handoff_referral.domain.status import CancelRefused
from handoff_referral.metrics import FHIR_TOKENS, LOCATIONS_CUT
from handoff_referral.service import (
    Clock,
    ExternalIdConflict,
    ReferralNotFound,
    ReferralService,
    utc_now,
)

log = logging.getLogger(__name__)

ACCESS_TOKEN_PREFIX = "hft_"  # noqa: S105 - a prefix that names the kind of token


class TokenRefused(Exception):
    """An OAuth 2.0 error answer: `status` (400 or 401), `error` (invalid_request,
    invalid_client, invalid_scope, unsupported_grant_type) and a description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True)
class IssuedToken:
    """An access token, shown once: `expires_in` seconds, `scopes` granted."""

    access_token: str
    expires_in: int
    scopes: tuple[str, ...]


class SmartAuthority:
    """Issues and checks SMART Backend Services access tokens."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock = utc_now) -> None:
        self.pool = pool
        self.clock = clock

    async def issue(self, form: Mapping[str, str], token_url: str) -> IssuedToken:
        """Answer a client_credentials token request whose client assertion is signed by a
        registered client; `token_url` is the assertion's required audience.

        Raises TokenRefused; a refused assertion's reason is counted and logged with the
        client id, never the assertion."""
        if form.get("grant_type") != "client_credentials":
            raise TokenRefused(
                400, "unsupported_grant_type", "grant_type must be client_credentials"
            )
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise TokenRefused(
                400, "invalid_request", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
            )
        assertion = form.get("client_assertion", "")
        client_id = "unknown"
        try:
            client_id = asserted_client_id(assertion)
            async with self.pool.acquire() as connection:
                client = await store.active_client(connection, client_id)
            if client is None:
                raise AssertionRefused("unknown_client", "no such client, or it was revoked")
            jwks = (
                client.jwks
                if client.jwks is not None
                else await store.fetch_jwks(str(client.jwks_url))
            )
            now = self.clock()
            verified = verify_assertion(assertion, jwks, client_id, token_url, now)
        except AssertionRefused as refused:
            self._refused(client_id, refused.reason)
            raise TokenRefused(401, "invalid_client", str(refused)) from None
        except (InvalidJwks, JwksUnavailable):
            self._refused(client_id, "jwks_unusable")
            raise TokenRefused(
                401, "invalid_client", "the client's registered keys could not be fetched or used"
            ) from None
        scopes = granted_scopes(form.get("scope", ""))
        if not scopes:
            self._refused(client_id, "no_scope")
            raise TokenRefused(400, "invalid_scope", "ask for system/ServiceRequest, Task scopes")
        token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = now + ACCESS_TOKEN_LIFETIME
        async with self.pool.acquire() as connection, connection.transaction():
            if not await store.use_assertion(
                connection, client_id, verified.jti, verified.remember_until, now
            ):
                self._refused(client_id, "jti_reused")
                raise TokenRefused(401, "invalid_client", "this assertion's jti was already used")
            await store.add_access_token(
                connection, _token_hash(token), client_id, scopes, expires_at, now
            )
        FHIR_TOKENS.labels("issued").inc()
        log.info(
            "fhir access token issued", extra={"client_id": client_id, "site_id": client.site_id}
        )
        return IssuedToken(token, int(ACCESS_TOKEN_LIFETIME.total_seconds()), scopes)

    @staticmethod
    def _refused(client_id: str, reason: str) -> None:
        FHIR_TOKENS.labels(reason).inc()
        log.warning("fhir token refused", extra={"client_id": client_id, "reason": reason})

    async def authenticate(self, token: str) -> AccessGrant | None:
        """The grant of a valid, unexpired access token; None for anything else."""
        if not token.startswith(ACCESS_TOKEN_PREFIX) or len(token) > 100:
            return None
        async with self.pool.acquire() as connection:
            return await store.access_grant(connection, _token_hash(token), self.clock())


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def not_found() -> FhirError:
    # Another site's Task is not found either: its existence is not the caller's business.
    return FhirError([Issue("not-found", "Task", "no such Task")], 404)


class FhirReferrals:
    """Referrals as BSeR ServiceRequest + Task, for the site an access grant acts for."""

    def __init__(self, service: ReferralService) -> None:
        self.service = service

    async def create_service_request(
        self, grant: AccessGrant, body: object, correlation_id: str | None
    ) -> tuple[dict[str, Any], bool]:
        """POST ServiceRequest: the referral's ServiceRequest view and whether it is new
        (a replay of the same identifier and content is the original). Raises FhirError."""
        resource = fhir.parse_resource(body, "ServiceRequest")
        mapping = fhir.referral_request(resource, fhir.References(resource.get("contained", [])))
        referral, created = await self._submit(grant, mapping, correlation_id)
        async with self.service.pool.acquire() as connection:
            await store.record_fhir_request(
                connection, referral.referral_id, mapping.identifier_system, None
            )
        return fhir.service_request_view(referral, mapping.identifier_system), created

    async def create_task(self, grant: AccessGrant, body: object) -> tuple[dict[str, Any], bool]:
        """POST Task whose focus is a ServiceRequest the site posted: the Task and whether
        this post made it (again: the same Task). Raises FhirError."""
        task = fhir.parse_resource(body, "Task")
        referral_id = fhir.focused_service_request(task)
        fhir.check_task(task, f"ServiceRequest/{referral_id}")
        try:
            referral = await self.service.get(grant.site, UUID(referral_id))
        except (ValueError, ReferralNotFound):
            raise fhir.invalid("Task.focus", "no such ServiceRequest of this site") from None
        async with self.service.pool.acquire() as connection:
            posted = await store.record_fhir_request(
                connection, referral.referral_id, "", self.service.clock()
            )
            found = await store.fhir_request(connection, grant.site.site_id, referral.referral_id)
        system = found[0] if found else ""
        return fhir.task_view(referral, system), posted

    async def transaction(
        self, grant: AccessGrant, body: object, correlation_id: str | None
    ) -> dict[str, Any]:
        """POST of a transaction Bundle with one ServiceRequest, one Task focused on it and
        the resources they reference: all taken or none. Returns the transaction-response
        Bundle. Raises FhirError naming `Bundle.entry[i]…`."""
        _check_bundle_entry_types(body)
        bundle = fhir.parse_resource(body, "Bundle")
        if bundle.get("type") != "transaction":
            raise fhir.invalid("Bundle.type", "must be transaction", "value")
        entries = bundle.get("entry", [])
        by_reference: dict[str, dict[str, Any]] = {}
        positions: dict[str, list[int]] = {"ServiceRequest": [], "Task": []}
        for index, entry in enumerate(entries):
            resource = entry.get("resource")
            if resource is None:
                raise fhir.invalid(f"Bundle.entry[{index}].resource", "is required", "required")
            kind = resource["resourceType"]
            positions.setdefault(kind, []).append(index)
            if isinstance(entry.get("fullUrl"), str):
                by_reference[entry["fullUrl"]] = resource
            if isinstance(resource.get("id"), str):
                by_reference[f"{kind}/{resource['id']}"] = resource
            request = entry.get("request", {})
            if kind in ("ServiceRequest", "Task") and (
                request.get("method") != "POST" or request.get("url") != kind
            ):
                raise fhir.invalid(
                    f"Bundle.entry[{index}].request", f"must be POST {kind}", "not-supported"
                )
        for kind in ("ServiceRequest", "Task"):
            if len(positions[kind]) != 1:
                raise fhir.invalid("Bundle.entry", f"exactly one {kind} is required", "required")
        [sr_at], [task_at] = positions["ServiceRequest"], positions["Task"]
        service_request = entries[sr_at]["resource"]
        focus = entries[sr_at].get("fullUrl") or f"ServiceRequest/{service_request.get('id')}"
        try:
            mapping = fhir.referral_request(
                service_request,
                fhir.References(service_request.get("contained", []), by_reference),
            )
            fhir.check_task(entries[task_at]["resource"], focus)
        except FhirError as refused:
            raise _within_bundle(refused, {"ServiceRequest": sr_at, "Task": task_at}) from None
        referral, created = await self._submit(grant, mapping, correlation_id)
        async with self.service.pool.acquire() as connection:
            await store.record_fhir_request(
                connection, referral.referral_id, mapping.identifier_system, self.service.clock()
            )
        status = "201 Created" if created else "200 OK"
        answers: list[dict[str, Any]] = []
        for index in range(len(entries)):
            if index == sr_at:
                location = f"ServiceRequest/{referral.referral_id}"
                answers.append({"response": {"status": status, "location": location}})
            elif index == task_at:
                answers.append(
                    {
                        "resource": fhir.task_view(referral, mapping.identifier_system),
                        "response": {"status": status, "location": f"Task/{referral.referral_id}"},
                    }
                )
            else:
                # Read for the referral, not kept as a resource of its own.
                answers.append({"response": {"status": "200 OK"}})
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}

    async def _submit(
        self, grant: AccessGrant, mapping: fhir.IntakeMapping, correlation_id: str | None
    ) -> tuple[Referral, bool]:
        try:
            referral, created = await self.service.submit(
                grant.site, mapping.request, correlation_id
            )
        except ExternalIdConflict:
            raise FhirError(
                [
                    Issue(
                        "conflict",
                        "ServiceRequest.identifier",
                        "this identifier was already used for a different request",
                    )
                ],
                409,
            ) from None
        if mapping.location_cut:
            LOCATIONS_CUT.labels("fhir").inc()
            log.warning(
                "ServiceRequest location over 40 characters: cut to 40",
                extra={"referral_id": str(referral.referral_id)},
            )
        return referral, created

    async def read_task(
        self, grant: AccessGrant, task_id: str, reader: Accessor | None = None
    ) -> dict[str, Any]:
        """GET Task/{id}: the Task of one of the site's referrals, the read recorded in the
        audit trail as `reader`'s when given. Raises FhirError 404."""
        referral, system = await self._posted(grant, task_id, reader)
        return fhir.task_view(referral, system)

    async def search_tasks(
        self, grant: AccessGrant, identifier: str, reader: Accessor | None = None
    ) -> dict[str, Any]:
        """GET Task?identifier=[system]|value: a searchset Bundle of the site's Tasks whose
        ServiceRequest carries that identifier; each Task returned is one audit entry of
        `reader`'s when given."""
        if not storable_text(identifier) or len(identifier) > 512:
            raise FhirError([Issue("value", "identifier", "not a usable identifier")], 400)
        system, value = fhir.parse_identifier_search(identifier)
        async with self.service.pool.acquire() as connection:
            found = await store.tasks_by_identifier(connection, grant.site.site_id, system, value)
        entries = []
        for referral_id, identifier_system in found:
            audit = reader.saw("referral", referral_id, fhir.TASK_FIELDS) if reader else None
            referral = await self.service.get(grant.site, referral_id, audit)
            entries.append(
                {
                    "fullUrl": f"Task/{referral_id}",
                    "resource": fhir.task_view(referral, identifier_system),
                    "search": {"mode": "match"},
                }
            )
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "entry": entries,
        }

    async def cancel_task(self, grant: AccessGrant, task_id: str, patch: object) -> dict[str, Any]:
        """PATCH Task/{id} with a JSON Patch setting status to cancelled: cancels the
        referral (again: no change). Raises FhirError: 404, 409 for a referral already
        completed or expired, 422 for any other patch."""
        reason = fhir.cancel_reason_of_patch(patch)
        referral, system = await self._posted(grant, task_id)
        try:
            cancelled = await self.service.cancel(grant.site, referral.referral_id, reason)
        except ReferralNotFound:
            raise not_found() from None
        except CancelRefused as refused:
            raise FhirError([Issue("conflict", "Task.status", str(refused))], 409) from None
        return fhir.task_view(cancelled, system)

    async def _posted(
        self, grant: AccessGrant, task_id: str, reader: Accessor | None = None
    ) -> tuple[Referral, str]:
        try:
            referral_id = UUID(task_id)
        except ValueError:
            raise not_found() from None
        async with self.service.pool.acquire() as connection:
            found = await store.fhir_request(connection, grant.site.site_id, referral_id)
        if found is None or found[1] is None:
            raise not_found()
        try:
            audit = reader.saw("referral", referral_id, fhir.TASK_FIELDS) if reader else None
            return await self.service.get(grant.site, referral_id, audit), found[0]
        except ReferralNotFound:
            raise not_found() from None


def _check_bundle_entry_types(body: object) -> None:
    """fhir.resources fails on resource types it does not know with a bare KeyError;
    name the entry instead."""
    entries = body.get("entry") if isinstance(body, dict) else None
    allowed = fhir.SUPPORTING | {"ServiceRequest", "Task"}
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if resource is not None and not (isinstance(kind, str) and kind in allowed):
            raise FhirError(
                [
                    Issue(
                        "not-supported",
                        f"Bundle.entry[{index}].resource",
                        f"must be one of {', '.join(sorted(allowed))}",
                    )
                ],
                400,
            )


def _within_bundle(refused: FhirError, at: Mapping[str, int]) -> FhirError:
    """The same issues, with the ServiceRequest's and Task's paths inside the Bundle."""
    issues = []
    for issue in refused.issues:
        expression = issue.expression
        for kind, index in at.items():
            if expression == kind or expression.startswith(f"{kind}."):
                expression = f"Bundle.entry[{index}].resource" + expression.removeprefix(kind)
        issues.append(Issue(issue.code, expression, issue.diagnostics))
    return FhirError(issues, refused.status)
