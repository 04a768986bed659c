"""The FHIR R4 API, mounted at /fhir/r4: thin routes over SmartAuthority and FhirReferrals.

Its own FastAPI app, so every answer, errors included, is FHIR: application/fhir+json,
and an OperationOutcome naming the element for any 4xx (OAuth errors on /token).
Its OpenAPI is at /fhir/r4/openapi.json.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from handoff_platform.audit import Accessor, ActorKind, Purpose, address_of
from handoff_platform.http import RETRY_AFTER_SECONDS
from handoff_platform.logs import correlation_id_var
from handoff_platform.transient import TRANSIENT_DATABASE_ERRORS, is_transient_database_error
from handoff_referral.adapters.fhir_store import AccessGrant
from handoff_referral.domain.fhir import FhirError, Issue
from handoff_referral.domain.smart import ALGORITHMS, GRANTABLE, permits
from handoff_referral.fhir_service import FhirReferrals, SmartAuthority, TokenRefused

log = logging.getLogger(__name__)

PREFIX = "/fhir/r4"
FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
SCOPES_SUPPORTED = [
    "system/ServiceRequest.c",
    "system/ServiceRequest.write",
    "system/Task.cru",
    "system/Task.rs",
    "system/Task.read",
    "system/Task.write",
]


_OUTCOME = {FHIR_JSON: {"schema": {"type": "object"}}}
REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": f"{meaning}: an OperationOutcome naming the element",
        "content": _OUTCOME,
    }
    for status, meaning in (
        (400, "malformed: not JSON, or fails FHIR R4's structure"),
        (401, "no valid access token"),
        (403, "the token's scopes do not allow it"),
        (404, "no such Task for this site"),
        (409, "identifier reused with another body, or the referral is over"),
        (415, "wrong Content-Type"),
        (422, "breaks a BSeR or Handoff rule"),
        (503, "briefly unavailable; retry after Retry-After"),
    )
}
REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"description": "the same request again: the original", "content": _OUTCOME}
}
OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "OAuth error: invalid_request, unsupported_grant_type, invalid_scope"},
    401: {"description": "OAuth error: invalid_client (the assertion is not trusted)"},
}


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def outcome(issues: list[Issue] | tuple[Issue, ...], severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome of `issues`."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": severity,
                "code": issue.code,
                "diagnostics": issue.diagnostics,
                **({"expression": [issue.expression]} if issue.expression else {}),
            }
            for issue in issues
        ],
    }


def _refusal(status: int, code: str, diagnostics: str, expression: str = "") -> FhirResponse:
    return FhirResponse(outcome([Issue(code, expression, diagnostics)]), status_code=status)


def fhir_too_large(max_bytes: int) -> Response:
    """The 413 OperationOutcome for a FHIR request body over `max_bytes` bytes."""
    return _refusal(413, "too-costly", f"the request body is over {max_bytes} bytes")


def fhir_duplicate_key(key: str) -> Response:
    """The 400 OperationOutcome for a body whose object holds `key` twice: malformed, since
    RFC 8259 section 4 leaves such an object's meaning to whichever parser reads it."""
    return _refusal(400, "structure", f"the property {key!r} is given twice in one object")


def _body_schema(media_type: str, description: str, kind: str = "object") -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {media_type: {"schema": {"type": kind}}},
        }
    }


def fhir_app(referrals: FhirReferrals, authority: SmartAuthority) -> FastAPI:
    """The FHIR API as an ASGI app to mount at PREFIX."""
    app = FastAPI(
        title="Handoff FHIR R4 API",
        version="1",
        description="BSeR-shaped ServiceRequest + Task, behind SMART Backend Services.",
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url="/docs",
        redoc_url=None,
    )
    _install_error_handlers(app)
    started = datetime.now(UTC).isoformat().replace("+00:00", "Z")

    async def granted(request: Request, resource: str, action: str) -> AccessGrant:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        grant = await authority.authenticate(token) if scheme.lower() == "bearer" else None
        if grant is None:
            raise _Unauthorized()
        if not permits(grant.scopes, resource, action):
            raise FhirError(
                [Issue("forbidden", resource, "the token's scopes do not allow this on it")],
                403,
            )
        return grant

    @app.get("/metadata", response_class=FhirResponse)
    async def capability_statement(request: Request) -> FhirResponse:
        """The CapabilityStatement: what this server does, and where to get a token."""
        base = _base_url(request, "/metadata")
        return FhirResponse(capability(base, started))

    @app.get("/.well-known/smart-configuration")
    async def smart_configuration(request: Request) -> JSONResponse:
        """SMART discovery: the token endpoint and how to authenticate to it."""
        base = _base_url(request, "/.well-known/smart-configuration")
        return JSONResponse(smart_configuration_document(base))

    @app.post(
        "/token",
        responses=OAUTH_ERRORS,
        openapi_extra=_body_schema(
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials, client_assertion_type (jwt-bearer), "
            "client_assertion (a JWT signed RS384 or ES384), scope",
        ),
    )
    async def token(request: Request) -> JSONResponse:
        """An access token (5 minutes) for a signed client assertion (private_key_jwt)."""
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return JSONResponse(
                {"error": "invalid_request", "error_description": "send a form-encoded body"},
                status_code=400,
                headers=no_store,
            )
        try:
            form = await request.form()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            issued = await authority.issue(fields, _base_url(request, "/token") + "/token")
        except TokenRefused as refused:
            headers = dict(no_store)
            if refused.status == 401:
                headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
            return JSONResponse(
                {"error": refused.error, "error_description": refused.description},
                status_code=refused.status,
                headers=headers,
            )
        return JSONResponse(
            {
                "access_token": issued.access_token,
                "token_type": "bearer",
                "expires_in": issued.expires_in,
                "scope": " ".join(issued.scopes),
            },
            headers=no_store,
        )

    @app.post(
        "/ServiceRequest",
        status_code=201,
        response_class=FhirResponse,
        responses=REFUSALS | REPLAYED,
        openapi_extra=_body_schema(FHIR_JSON, "A BSeR ServiceRequest."),
    )
    async def create_service_request(request: Request) -> FhirResponse:
        """A referral. Its identifier is the idempotency key: the same again answers 200."""
        grant = await granted(request, "ServiceRequest", "c")
        body = await _resource_body(request)
        view, created = await referrals.create_service_request(
            grant, body, correlation_id_var.get()
        )
        return FhirResponse(
            view,
            status_code=201 if created else 200,
            headers={"Location": f"{PREFIX}/ServiceRequest/{view['id']}"},
        )

    @app.api_route(
        "/ServiceRequest/{request_id}",
        methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "POST"],
        include_in_schema=False,
    )
    async def service_request_by_id(request_id: str) -> FhirResponse:
        """The Location a create answers with, where nothing is served (the CapabilityStatement
        offers create only): 405 for every method, pointing at the Task, rather than a 404
        that reads as a lost referral. Before authentication: it says nothing of a referral."""
        response = _refusal(
            405,
            "not-supported",
            "ServiceRequest supports create only; read and cancel the referral through its "
            "Task (GET or PATCH Task/{id}, the same id)",
            "ServiceRequest",
        )
        response.headers["Allow"] = ""
        return response

    @app.post(
        "/Task",
        status_code=201,
        response_class=FhirResponse,
        responses=REFUSALS | REPLAYED,
        openapi_extra=_body_schema(FHIR_JSON, "A BSeR Task whose focus is the ServiceRequest."),
    )
    async def create_task(request: Request) -> FhirResponse:
        """The Task that carries the referral's status back; posted again, the same Task."""
        grant = await granted(request, "Task", "c")
        task, posted = await referrals.create_task(grant, await _resource_body(request))
        return FhirResponse(
            task,
            status_code=201 if posted else 200,
            headers={"Location": f"{PREFIX}/Task/{task['id']}"},
        )

    @app.post(
        "/",
        response_class=FhirResponse,
        responses=REFUSALS,
        openapi_extra=_body_schema(FHIR_JSON, "A transaction Bundle: ServiceRequest + Task."),
    )
    async def transaction(request: Request) -> FhirResponse:
        """A transaction Bundle with the ServiceRequest, its Task and what they reference."""
        grant = await granted(request, "ServiceRequest", "c")
        if not permits(grant.scopes, "Task", "c"):
            raise FhirError([Issue("forbidden", "Task", "the token cannot create Tasks")], 403)
        body = await _resource_body(request)
        return FhirResponse(await referrals.transaction(grant, body, correlation_id_var.get()))

    @app.get("/Task/{task_id}", response_class=FhirResponse, responses=REFUSALS)
    async def read_task(task_id: str, request: Request) -> FhirResponse:
        """The Task: Task.status and businessStatus follow the referral's timeline."""
        grant = await granted(request, "Task", "r")
        return FhirResponse(await referrals.read_task(grant, task_id, _reader(grant, request)))

    @app.get("/Task", response_class=FhirResponse, responses=REFUSALS)
    async def search_tasks(request: Request, identifier: str | None = None) -> FhirResponse:
        """Tasks by their ServiceRequest's identifier: `system|value`, `|value` or `value`."""
        grant = await granted(request, "Task", "s")
        unknown = sorted(set(request.query_params) - {"identifier", "_format"})
        if unknown:
            raise FhirError(
                [Issue("not-supported", unknown[0], "only identifier is a search parameter")], 400
            )
        if not identifier:
            raise FhirError([Issue("required", "identifier", "search by identifier")], 400)
        reader = _reader(grant, request)
        return FhirResponse(await referrals.search_tasks(grant, identifier, reader))

    @app.patch(
        "/Task/{task_id}",
        response_class=FhirResponse,
        responses=REFUSALS,
        openapi_extra=_body_schema(
            JSON_PATCH,
            'JSON Patch: [{"op": "replace", "path": "/status", "value": "cancelled"}]',
            "array",
        ),
    )
    async def patch_task(task_id: str, request: Request) -> FhirResponse:
        """Cancel the referral: a JSON Patch setting /status to cancelled (and optionally
        /statusReason to one of Handoff's cancel reasons)."""
        grant = await granted(request, "Task", "u")
        patch = await _json_body(request, (JSON_PATCH,), "Patch")
        return FhirResponse(await referrals.cancel_task(grant, task_id, patch))

    return app


def mount_fhir(app: FastAPI, referrals: FhirReferrals, authority: SmartAuthority) -> None:
    """Serve the FHIR API under PREFIX of `app`, the base URL itself included: a transaction
    Bundle is POSTed to `/fhir/r4`, which a mount alone would redirect."""
    fhir = fhir_app(referrals, authority)
    # Every method: a GET on the base is the FHIR app's 405 OperationOutcome, not the REST shape.
    app.router.routes.append(Route(PREFIX, _AtBase(fhir), include_in_schema=False))
    app.mount(PREFIX, fhir)


class _AtBase:
    """The FHIR app, for a request to the base URL without its trailing slash."""

    def __init__(self, fhir: FastAPI) -> None:
        self.fhir = fhir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fhir({**scope, "path": f"{PREFIX}/", "root_path": PREFIX}, receive, send)


class _Unauthorized(Exception):
    pass


def _reader(grant: AccessGrant, request: Request) -> Accessor:
    """The audit trail's who, why and from where of a FHIR read: the SMART client, reading
    its hospital's referrals for treatment."""
    address = address_of(request.client.host if request.client else None)
    return Accessor(ActorKind.FHIR_CLIENT, grant.client_id, Purpose.TREATMENT, address)


async def _resource_body(request: Request) -> object:
    return await _json_body(request, (FHIR_JSON, "application/json"), "body")


async def _json_body(request: Request, media_types: tuple[str, ...], what: str) -> object:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in media_types:
        raise FhirError(
            [Issue("not-supported", "", f"Content-Type must be {' or '.join(media_types)}")], 415
        )
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError):
        raise FhirError([Issue("structure", "", f"the {what} is not valid JSON")], 400) from None


def _base_url(request: Request, suffix: str) -> str:
    """This FHIR server's base URL as the caller sees it (for token audiences and links)."""
    url = str(request.url.replace(query="", fragment=""))
    return url.removesuffix(suffix)


def capability(base: str, date: str) -> dict[str, Any]:
    """The CapabilityStatement of this server at `base`."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "Handoff"},
        "implementation": {"description": "Handoff referral service", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "patchFormat": [JSON_PATCH],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/"
                            "oauth-uris",
                            "extension": [{"url": "token", "valueUri": f"{base}/token"}],
                        }
                    ],
                },
                "resource": [
                    {"type": "ServiceRequest", "interaction": [{"code": "create"}]},
                    {
                        "type": "Task",
                        "interaction": [
                            {"code": "create"},
                            {"code": "read"},
                            {"code": "patch"},
                            {"code": "search-type"},
                        ],
                        "searchParam": [{"name": "identifier", "type": "token"}],
                    },
                ],
                "interaction": [{"code": "transaction"}],
            }
        ],
    }


def smart_configuration_document(base: str) -> dict[str, Any]:
    """SMART's discovery document for backend services."""
    return {
        "token_endpoint": f"{base}/token",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        "resources": sorted(GRANTABLE),
    }


def _install_error_handlers(app: FastAPI) -> None:
    Handler = Callable[[Request, Any], Awaitable[Response]]

    async def fhir_error(_: Request, error: FhirError) -> Response:
        return FhirResponse(outcome(error.issues), status_code=error.status)

    async def unauthorized(_: Request, __: _Unauthorized) -> Response:
        response = _refusal(401, "login", "a valid SMART access token is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="handoff-fhir"'
        return response

    async def invalid_request(_: Request, error: RequestValidationError) -> Response:
        issues = [
            Issue("invalid", ".".join(str(p) for p in item["loc"][1:]), str(item["msg"]))
            for item in error.errors()
        ]
        return FhirResponse(outcome(issues), status_code=400)

    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        code = "not-found" if error.status_code == 404 else "not-supported"
        response = _refusal(error.status_code, code, str(error.detail))
        response.headers.update(error.headers or {})  # a 405's Allow
        return response

    async def unexpected(_: Request, error: Exception) -> Response:
        if is_transient_database_error(error):
            log.warning("database unavailable; answered 503", extra={"error": type(error).__name__})
            response = _refusal(503, "transient", "briefly unavailable; retry shortly")
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        log.exception("unhandled error", extra={"error": type(error).__name__})
        return _refusal(500, "exception", "something went wrong on our side")

    handlers: dict[type[Exception], Handler] = {
        FhirError: fhir_error,
        _Unauthorized: unauthorized,
        RequestValidationError: invalid_request,
        StarletteHTTPException: http_error,
        Exception: unexpected,
    }
    for error_class in TRANSIENT_DATABASE_ERRORS:
        handlers[error_class] = unexpected
    for error_class, handler in handlers.items():
        app.add_exception_handler(error_class, handler)
