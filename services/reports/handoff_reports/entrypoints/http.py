"""The reports API: `GET /v1/reports/monthly`, JSON or CSV (README: "Program reports").

Every call needs `Authorization: Bearer <REPORTS_ADMIN_TOKEN>`, like the matching and
referral admin APIs; without a token configured the API refuses everything.
"""

from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from handoff_platform.http import ADMIN_ERRORS, ApiError, SiteQuery, admin_token_required
from handoff_reports.domain.figures import MONTH_PATTERN, Month
from handoff_reports.domain.suppression import report_csv, report_document
from handoff_reports.reports import monthly_rows

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"

MonthQuery = Annotated[
    str,
    Query(
        # The range (2000-2999) is in the pattern, so every bad month is the same error
        # (`invalid_request`, field `month`, `string_pattern_mismatch`).
        pattern=MONTH_PATTERN,
        description="The UTC calendar month, YYYY-MM (2000-01 to 2999-12, ASCII digits).",
        examples=["2026-11"],
    ),
]
StateQuery = Annotated[
    str | None, Query(pattern=r"^[A-Z]{2}$", description="One state only (USPS code).")
]
FormatQuery = Annotated[
    str | None,
    Query(
        alias="format",
        pattern=r"^(json|csv)$",
        description="csv or json; without it, `Accept: text/csv` asks for CSV.",
    ),
]


def wants_csv(format_: str | None, accept: str) -> bool:
    """CSV if `format=csv`, or with no format given, if Accept names text/csv."""
    if format_ is not None:
        return format_ == "csv"
    return "text/csv" in accept.lower()


def csv_filename(month: Month, state: str | None, site_id: str | None) -> str:
    """`handoff-report-2026-11[-RI][-site].csv`: slugs and codes only, safe in a header."""
    return (
        "-".join(
            [
                "handoff-report",
                str(month),
                *([state] if state else []),
                *([site_id] if site_id else []),
            ]
        )
        + ".csv"
    )


def build_reports_router(pool: asyncpg.Pool, token: SecretStr | None) -> APIRouter:
    """The reports routes, behind the admin token."""
    router = APIRouter(
        prefix="/v1/reports",
        tags=["reports"],
        dependencies=[admin_token_required(token, "REPORTS_ADMIN_TOKEN")],
        responses=ADMIN_ERRORS,
    )

    @router.get(
        "/monthly",
        responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
    )
    async def monthly(
        request: Request,
        month: MonthQuery,
        state: StateQuery = None,
        site_id: SiteQuery = None,
        format_: FormatQuery = None,
    ) -> Response:
        """The month's figures per site, de-identified (counts 1-10 and percentiles of
        fewer than 11 values suppressed): JSON, or CSV with `format=csv` or
        `Accept: text/csv`. Times in minutes; the month is the UTC calendar month."""
        try:
            parsed = Month.parse(month)
        except ValueError as error:
            # Unreachable behind the pattern; kept so a looser pattern cannot let one by.
            raise ApiError(422, "invalid_request", str(error), field="month") from None
        async with pool.acquire() as connection:
            rows = await monthly_rows(connection, parsed, state, site_id)
        if wants_csv(format_, request.headers.get("accept", "")):
            filename = csv_filename(parsed, state, site_id)
            return Response(
                report_csv(rows),
                media_type=CSV_MEDIA_TYPE,
                headers={"Content-Disposition": f'attachment; filename="{filename}"'},
            )
        filters = {key: value for key, value in (("state", state), ("site_id", site_id)) if value}
        document = report_document(parsed, rows, datetime.now(UTC), filters)
        return JSONResponse(document)

    return router
