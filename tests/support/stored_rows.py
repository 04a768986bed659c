"""Every row a service stored, as text, for privacy scans: a value that must never be kept
(a FHIR note, a PID name, MRN or date of birth) is looked for in every column of every
table of a schema, not only in the columns a test thinks of."""

from typing import Any

from handoff_platform.database import Connection


def _text(value: Any) -> str:
    """A column's value as the text a leak would show in: bytes decoded (a value stored
    raw in a bytea column is found too), everything else as Python prints it."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


async def stored_rows(
    connection: Connection, schema: str, site_id: str | None = None
) -> dict[str, list[str]]:
    """Table name → each of its rows as one line of text, for every table of `schema`.

    With `site_id`, rows of tables that have a `site_id` column are kept only when they
    belong to that site (the schema is shared by the session's tests, and other tests'
    rows may hold the same test patient legitimately, e.g. a REST referral's notes);
    tables without one are read whole."""
    tables = await connection.fetch(
        """SELECT table_name FROM information_schema.tables
           WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name""",
        schema,
    )
    found: dict[str, list[str]] = {}
    for table in tables:
        name = table["table_name"]
        rows = await connection.fetch(f'SELECT * FROM "{schema}"."{name}"')
        found[name] = [
            " | ".join(f"{column}={_text(value)}" for column, value in row.items())
            for row in rows
            if site_id is None or row.get("site_id", site_id) == site_id
        ]
    return found


def leaks(rows: dict[str, list[str]], values: list[str]) -> list[tuple[str, str, str]]:
    """(table, value, the start of the row) for each of `values` found in `rows`."""
    return [
        (table, value, line[:160])
        for table, lines in rows.items()
        for line in lines
        for value in values
        if value in line
    ]


def written_since(
    before: dict[str, list[str]], after: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The rows of `after` that were not in `before`: what was written or changed between."""
    written = {}
    for table, lines in after.items():
        seen = set(before.get(table, []))
        written[table] = [line for line in lines if line not in seen]
    return written
