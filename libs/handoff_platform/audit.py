"""The audit trail of every look at patient data and every disclosure of it (decision 0024).

Each service keeps an append-only `audit_log` table in its own schema (platform migration
0004): one entry per access — who (actor kind and id), what (record kind, id and the NAMES
of the fields seen), when (UTC, the database's clock), from where (client address, or the
host a disclosure went to) and why (purpose). An entry never holds a value that was seen:
ids and field names only, checked here before anything is written. The table refuses
UPDATE, DELETE and TRUNCATE for every role, its owner included (REVOKE plus a trigger).

Entries are written with `record`, inside the transaction of the read they describe where
there is one; exported with `entries` (in order), `to_csv` / `to_json`, the admin route of
`build_audit_router` and the CLI of `audit_cli`.
"""

import asyncio
import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Annotated

import asyncpg
import typer
from fastapi import APIRouter, Query
from pydantic import BaseModel, SecretStr

from handoff_platform.database import Connection
from handoff_platform.http import ADMIN_ERRORS, ApiError, admin_token_required
from handoff_platform.settings import PlatformSettings, settings_or_exit

MAX_EXPORT = 10_000
"""The most entries one admin call returns; `truncated` says when the range held more."""


class Purpose(StrEnum):
    """Why the data was seen or sent (HIPAA's vocabulary)."""

    TREATMENT = "treatment"  # a coach, or the hospital that treats the patient, reads it
    OPERATIONS = "operations"  # a coordinator watching the program run
    DISCLOSURE = "disclosure"  # Handoff sends it to someone outside (a status webhook)


class ActorKind(StrEnum):
    """Who looked: the kind of identity `actor_id` names."""

    API_KEY = "api_key"  # a hospital system's API key id (not its secret)
    FHIR_CLIENT = "fhir_client"  # a SMART backend client id
    COACH = "coach"  # a coach id, behind their signed page link
    CONSOLE_USER = "console_user"  # a console account's username
    SITE_CALLBACK = "site_callback"  # a site's webhook endpoint, by site id


class InvalidAuditEntry(ValueError):
    """An entry that would hold something other than ids and field names."""


# Ids and names only: a value with a space, a slash or a plus (a name, a sentence, a
# phone number) is refused, so a caller cannot slip a value in where a name belongs.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.:_\[\]%-]{1,255}$")


def address_of(host: str | None) -> str | None:
    """`host` (a socket's peer, a URL's host name) when it is shaped like an address, else
    None: where a look came from is worth recording, never worth refusing the look for."""
    return host if host is not None and _ADDRESS.match(host) else None


@dataclass(frozen=True)
class Accessor:
    """Who is looking, why, and from where (`client_address`: an IP address or host name;
    None when unknown). Raises InvalidAuditEntry for an id that is not an id."""

    kind: ActorKind
    actor_id: str
    purpose: Purpose
    client_address: str | None = None

    def __post_init__(self) -> None:
        if not _ID.match(self.actor_id):
            raise InvalidAuditEntry("actor_id must be an id")
        if self.client_address is not None and not _ADDRESS.match(self.client_address):
            raise InvalidAuditEntry("client_address must be an address")

    def saw(self, record_kind: str, record_id: object, fields: Sequence[str]) -> "AuditEntry":
        """The entry for this accessor seeing `fields` (names) of one record."""
        return AuditEntry(self, record_kind, str(record_id), tuple(fields))


@dataclass(frozen=True)
class AuditEntry:
    """One access to write: `accessor` saw `fields` (names, at least one) of the record
    `record_kind`/`record_id`. Raises InvalidAuditEntry for anything but ids and names."""

    accessor: Accessor
    record_kind: str
    record_id: str
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        if not _NAME.match(self.record_kind):
            raise InvalidAuditEntry("record_kind must be a name")
        if not _ID.match(self.record_id):
            raise InvalidAuditEntry("record_id must be an id")
        if not self.fields or not all(_NAME.match(f) for f in self.fields):
            raise InvalidAuditEntry("fields must be one or more field names")


class AuditRecord(BaseModel):
    """A stored entry, as exported. `at` is UTC."""

    entry_id: int
    at: datetime
    actor_kind: str
    actor_id: str
    record_kind: str
    record_id: str
    fields: list[str]
    purpose: str
    client_address: str | None


COLUMNS = tuple(AuditRecord.model_fields)
"""The export's columns, in order (the CSV header)."""


async def record(connection: Connection, schema: str, entry: AuditEntry) -> None:
    """Append one entry to `schema`.audit_log, in the caller's transaction if it has one."""
    accessor = entry.accessor
    await connection.execute(
        f"""INSERT INTO "{schema}".audit_log
                (actor_kind, actor_id, record_kind, record_id, fields, purpose, client_address)
            VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        accessor.kind.value,
        accessor.actor_id,
        entry.record_kind,
        entry.record_id,
        list(entry.fields),
        accessor.purpose.value,
        accessor.client_address,
    )


async def entries(
    connection: Connection, schema: str, start: datetime, end: datetime, limit: int | None = None
) -> list[AuditRecord]:
    """The entries of `schema` with `start <= at < end`, oldest first (at most `limit`)."""
    rows = await connection.fetch(
        f"""SELECT {", ".join(COLUMNS)} FROM "{schema}".audit_log
            WHERE at >= $1 AND at < $2 ORDER BY at, entry_id LIMIT $3""",
        start,
        end,
        limit,
    )
    return [AuditRecord(**{**dict(r), "at": r["at"].astimezone(UTC)}) for r in rows]


def to_csv(records: Sequence[AuditRecord]) -> str:
    """CSV with a header row of COLUMNS; `fields` joined by `;`, times ISO 8601 UTC."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for entry in records:
        row = entry.model_dump(mode="json")
        row["fields"] = ";".join(entry.fields)
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return out.getvalue()


def to_json(records: Sequence[AuditRecord]) -> str:
    """A JSON array of entries, one object each."""
    return json.dumps([r.model_dump(mode="json") for r in records], indent=1)


def check_range(start: datetime, end: datetime) -> None:
    """Raises ApiError 422 naming `to` when the range is empty or backwards."""
    if end <= start:
        raise ApiError(422, "invalid_range", "to must be after from", field="to")


class AuditExport(BaseModel):
    entries: list[AuditRecord]
    truncated: bool  # more than MAX_EXPORT entries in the range: ask for a shorter one


_BOUND_HELP = (
    "ISO 8601: a date (2026-12-01, midnight UTC) or a date-time with an offset "
    "(2026-12-01T14:00:00Z)."
)
_PLAIN_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_bound(text: str, field: str) -> datetime:
    """A range bound of the admin export: a plain date is midnight UTC (as the CLI reads
    it); a date-time must carry its offset, since the server cannot guess the caller's
    zone. Raises ApiError 422 naming `field` otherwise."""
    try:
        if _PLAIN_DATE.match(text):
            return datetime.combine(date.fromisoformat(text), time(0), UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            422, "invalid_time", f"{field}: not an ISO 8601 date or date-time", field=field
        ) from None
    if value.tzinfo is None:
        raise ApiError(
            422, "timezone_missing", f"{field}: give an offset (Z or +hh:mm) or a date", field=field
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+00:01 is in year 0 in UTC
        raise ApiError(
            422, "invalid_time", f"{field}: out of range once converted to UTC", field=field
        ) from None


def build_audit_router(pool: asyncpg.Pool, schema: str, token: SecretStr | None) -> APIRouter:
    """GET /v1/admin/audit?from=&to= behind the service's admin token (ISO 8601: a date,
    midnight UTC, or a date-time with an offset; `from` inclusive, `to` exclusive): the
    service's audit entries, oldest first."""
    router = APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        responses=ADMIN_ERRORS,
        dependencies=[admin_token_required(token, "The service's admin token.")],
    )

    @router.get("/audit", response_model=AuditExport)
    async def export_audit(
        start_text: Annotated[str, Query(alias="from", description=_BOUND_HELP)],
        end_text: Annotated[str, Query(alias="to", description=_BOUND_HELP)],
    ) -> AuditExport:
        """Who looked at or was sent patient data, what, when, from where and why."""
        start, end = parse_bound(start_text, "from"), parse_bound(end_text, "to")
        check_range(start, end)
        async with pool.acquire() as connection:
            found = await entries(connection, schema, start, end, MAX_EXPORT + 1)
        return AuditExport(entries=found[:MAX_EXPORT], truncated=len(found) > MAX_EXPORT)

    return router


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


def _parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 date or date-time; one without an offset is UTC. Exits 2 naming the
    option when it is not one."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        typer.echo(f"{option}: not an ISO 8601 date-time: {text!r}", err=True)
        raise typer.Exit(2) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def audit_cli(schema: str) -> typer.Typer:
    """`… audit export --from --to [--format csv|json]`: the schema's entries on stdout.
    Reads only `DATABASE_URL` (and libpq's variables): an auditor needs none of the
    service's other settings."""
    app = typer.Typer(help="The audit trail of looks at patient data.", no_args_is_help=True)

    @app.command("export")
    def export(
        start_text: Annotated[
            str, typer.Option("--from", help="From (inclusive), ISO 8601; UTC if no offset.")
        ],
        end_text: Annotated[
            str, typer.Option("--to", help="To (exclusive), ISO 8601; UTC if no offset.")
        ],
        output: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.CSV,
    ) -> None:
        """Print the entries of a time range, oldest first."""
        start, end = _parse_time(start_text, "--from"), _parse_time(end_text, "--to")
        if end <= start:
            typer.echo("--to must be after --from", err=True)
            raise typer.Exit(2)
        database_url = settings_or_exit(PlatformSettings).database_url
        found = asyncio.run(_read(database_url, schema, start, end))
        typer.echo(to_csv(found) if output is ExportFormat.CSV else to_json(found), nl=False)

    return app


async def _read(
    database_url: str, schema: str, start: datetime, end: datetime
) -> list[AuditRecord]:
    connection = await asyncpg.connect(database_url)
    try:
        return await entries(connection, schema, start, end)
    finally:
        await connection.close()
