"""PostgreSQL storage of FHIR clients, used assertion ids, access tokens and the FHIR side of
referrals; and fetching a client's published JWKS. Each function runs on the caller's
connection, so the use case decides the transaction."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx

from handoff_platform.database import Connection
from handoff_referral import SCHEMA
from handoff_referral.domain.referral import Site

JWKS_FETCH_SECONDS = 5.0


@dataclass(frozen=True)
class FhirClient:
    """A registered client: its keys are `jwks` itself or published at `jwks_url`."""

    client_id: str
    site_id: str
    label: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class AccessGrant:
    """What a valid access token lets its bearer do: act for `site` with `scopes`."""

    client_id: str
    site: Site
    scopes: tuple[str, ...]


class JwksUnavailable(Exception):
    """The client's published JWKS could not be fetched or is not JSON."""


async def add_client(
    connection: Connection,
    client_id: str,
    site_id: str,
    label: str,
    jwks: dict[str, Any] | None,
    jwks_url: str | None,
) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.fhir_clients (client_id, site_id, label, jwks, jwks_url)
            VALUES ($1, $2, $3, $4::jsonb, $5)""",
        client_id,
        site_id,
        label,
        json.dumps(jwks) if jwks is not None else None,
        jwks_url,
    )


async def list_clients(connection: Connection, site_id: str | None) -> list[FhirClient]:
    rows = await connection.fetch(
        f"""SELECT client_id, site_id, label, jwks, jwks_url, created_at, revoked_at
            FROM {SCHEMA}.fhir_clients WHERE $1::text IS NULL OR site_id = $1
            ORDER BY site_id, created_at""",
        site_id,
    )
    return [_client(row) for row in rows]


async def active_client(connection: Connection, client_id: str) -> FhirClient | None:
    row = await connection.fetchrow(
        f"""SELECT client_id, site_id, label, jwks, jwks_url, created_at, revoked_at
            FROM {SCHEMA}.fhir_clients WHERE client_id = $1 AND revoked_at IS NULL""",
        client_id,
    )
    return _client(row) if row else None


async def revoke_client(connection: Connection, client_id: str) -> bool:
    """Revokes the client and ends its access tokens at once, in one transaction."""
    async with connection.transaction():
        revoked = await connection.fetchval(
            f"""UPDATE {SCHEMA}.fhir_clients SET revoked_at = now()
                WHERE client_id = $1 AND revoked_at IS NULL RETURNING true""",
            client_id,
        )
        await connection.execute(
            f"DELETE FROM {SCHEMA}.fhir_access_tokens WHERE client_id = $1", client_id
        )
    return bool(revoked)


def _client(row: Any) -> FhirClient:
    jwks = json.loads(row["jwks"]) if row["jwks"] is not None else None
    return FhirClient(
        client_id=row["client_id"],
        site_id=row["site_id"],
        label=row["label"],
        jwks=jwks,
        jwks_url=row["jwks_url"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


async def use_assertion(
    connection: Connection, client_id: str, jti: str, expires_at: datetime, now: datetime
) -> bool:
    """Records an assertion's jti until it expires; False if it was seen before.
    Forgets the ids of assertions that have expired, which can no longer be replayed."""
    await connection.execute(
        f"DELETE FROM {SCHEMA}.fhir_assertions_used WHERE expires_at < $1", now
    )
    first = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.fhir_assertions_used (client_id, jti, expires_at)
            VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true""",
        client_id,
        jti,
        expires_at,
    )
    return bool(first)


async def add_access_token(
    connection: Connection,
    token_sha256: bytes,
    client_id: str,
    scopes: tuple[str, ...],
    expires_at: datetime,
    now: datetime,
) -> None:
    await connection.execute(f"DELETE FROM {SCHEMA}.fhir_access_tokens WHERE expires_at < $1", now)
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.fhir_access_tokens (token_sha256, client_id, scopes, expires_at)
            VALUES ($1, $2, $3, $4)""",
        token_sha256,
        client_id,
        list(scopes),
        expires_at,
    )


async def access_grant(
    connection: Connection, token_sha256: bytes, now: datetime
) -> AccessGrant | None:
    """The grant of an unexpired token of a client not revoked; None otherwise."""
    row = await connection.fetchrow(
        f"""SELECT t.client_id, t.scopes, s.site_id, s.name, s.short_name, s.state, s.time_zone
            FROM {SCHEMA}.fhir_access_tokens t
            JOIN {SCHEMA}.fhir_clients c USING (client_id)
            JOIN {SCHEMA}.sites s ON s.site_id = c.site_id
            WHERE t.token_sha256 = $1 AND t.expires_at > $2 AND c.revoked_at IS NULL""",
        token_sha256,
        now,
    )
    if row is None:
        return None
    site = Site(
        site_id=row["site_id"],
        name=row["name"],
        short_name=row["short_name"],
        state=row["state"],
        time_zone=row["time_zone"],
    )
    return AccessGrant(client_id=row["client_id"], site=site, scopes=tuple(row["scopes"]))


async def record_fhir_request(
    connection: Connection,
    referral_id: UUID,
    identifier_system: str,
    task_posted_at: datetime | None,
) -> bool:
    """Notes that a referral came as a ServiceRequest, and when its Task was posted.
    Returns True if this call posted the Task (it had not been before)."""
    posted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.fhir_requests AS f (referral_id, identifier_system, task_posted_at)
            VALUES ($1, $2, $3)
            ON CONFLICT (referral_id) DO UPDATE
                SET task_posted_at = coalesce(f.task_posted_at, excluded.task_posted_at)
            RETURNING f.task_posted_at IS NOT NULL AND f.task_posted_at = $3""",
        referral_id,
        identifier_system,
        task_posted_at,
    )
    return bool(posted) and task_posted_at is not None


async def fhir_request(
    connection: Connection, site_id: str, referral_id: UUID
) -> tuple[str, datetime | None] | None:
    """The identifier system and Task posting time of a site's FHIR referral, if it is one."""
    row = await connection.fetchrow(
        f"""SELECT f.identifier_system, f.task_posted_at
            FROM {SCHEMA}.fhir_requests f JOIN {SCHEMA}.referrals r USING (referral_id)
            WHERE f.referral_id = $1 AND r.site_id = $2""",
        referral_id,
        site_id,
    )
    return (row["identifier_system"], row["task_posted_at"]) if row else None


async def tasks_by_identifier(
    connection: Connection, site_id: str, system: str | None, value: str
) -> list[tuple[UUID, str]]:
    """The site's posted Tasks whose ServiceRequest identifier matches: (referral id,
    identifier system). `system` None matches any system, "" only identifiers without."""
    rows = await connection.fetch(
        f"""SELECT r.referral_id, f.identifier_system
            FROM {SCHEMA}.referrals r JOIN {SCHEMA}.fhir_requests f USING (referral_id)
            WHERE r.site_id = $1 AND r.external_id = $2
              AND ($3::text IS NULL OR f.identifier_system = $3)
              AND f.task_posted_at IS NOT NULL""",
        site_id,
        value,
        system,
    )
    return [(row["referral_id"], row["identifier_system"]) for row in rows]


async def fetch_jwks(url: str) -> dict[str, Any]:
    """The JWKS a client publishes at `url`. Raises JwksUnavailable on any failure."""
    try:
        async with httpx.AsyncClient(timeout=JWKS_FETCH_SECONDS) as client:
            response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            jwks = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise JwksUnavailable(type(error).__name__) from None
    if not isinstance(jwks, dict):
        raise JwksUnavailable("not a JSON object")
    return jwks
