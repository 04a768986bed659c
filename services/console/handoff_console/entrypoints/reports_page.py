"""The console's Reports page: the month's de-identified figures per site, with charts,
from the reports service's API (the console reads no other service's tables)."""

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from handoff_console.adapters.accounts import Session
from handoff_console.adapters.services import ServiceUnavailable
from handoff_console.domain.access import may_view_site
from handoff_console.domain.report_charts import (
    NO_VALUE,
    SUPPRESSED_COUNT,
    SUPPRESSED_TIME,
    bar_chart,
    bars_from,
)

if TYPE_CHECKING:  # web.py includes these routes: importing it at run time would be a cycle
    from handoff_console.entrypoints.web import Console

_MONTH = re.compile(r"^2[0-9]{3}-(0[1-9]|1[0-2])$")
"""YYYY-MM, 2000-01 to 2999-12 as the reports API takes it; `[0-9]`, not `\\d` (which
matches any Unicode digit, e.g. a full-width one)."""
MONTH_PROBLEM = "expected a month as YYYY-MM (2000-01 to 2999-12)"

ACTIVITY = (
    ("referrals_received", "Referrals received"),
    ("accepted_site", "Accepted by the site's coaches"),
    ("accepted_state_pool", "Accepted by the state pool"),
    ("accepted_supervisor", "Accepted by a supervisor"),
    ("unassigned", "Unassigned"),
    ("expired", "Expired"),
    ("visits_completed", "Visits completed"),
)
FOLLOW_UPS = tuple(
    (f"follow_ups_{what}_{window}", f"{window} {what}")
    for window in ("1d", "30d", "90d", "other")
    for what in ("due", "attempted", "reached")
)
TIMES = tuple(
    (f"minutes_to_{what}_{p}", f"{label} {p}")
    for what, label in (
        ("first_page", "First page"),
        ("acceptance", "Acceptance"),
        ("bedside", "Bedside"),
    )
    for p in ("p50", "p90")
)


def _current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _neighbours(month: str) -> tuple[str, str]:
    year, number = int(month[:4]), int(month[5:])
    before = f"{year - 1}-12" if number == 1 else f"{year}-{number - 1:02d}"
    after = f"{year + 1}-01" if number == 12 else f"{year}-{number + 1:02d}"
    return before, after


def _cell_text(name: str, cell: dict[str, Any]) -> str:
    """A figure as the CSV writes it: `<11` for a withheld count, `n<11` for a withheld
    percentile, a time with one decimal (`0.0`), a count as a whole number."""
    value = cell.get("value")
    if cell.get("suppressed"):
        return SUPPRESSED_TIME if name.startswith("minutes_") else SUPPRESSED_COUNT
    if value is None:
        return NO_VALUE
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def add_reports_routes(
    router: APIRouter,
    console: "Console",
    current_session: Callable[[Request], Awaitable[Session]],
) -> None:
    """GET /reports?month=YYYY-MM: every site in the account's scope with figures that
    month (the account's access rules, as for every site page); no month (or an empty
    one): the current UTC month; a month not YYYY-MM (2000-01 to 2999-12, ASCII digits):
    422, the page naming it with the form, and no figures. The reports service away: the
    console's 503 page naming it."""
    SignedIn = Annotated[Session, Depends(current_session)]

    @router.get("/reports", response_class=HTMLResponse)
    async def reports_page(
        request: Request, session: SignedIn, month: str | None = None
    ) -> Response:
        if month and not _MONTH.fullmatch(month):  # empty (the form sent blank): this month
            # Never another month's figures for a typo: say so, keep the form.
            return console.render(
                request,
                "reports.html",
                status=422,
                session=session,
                month=month,
                error=f"month {month!r}: {MONTH_PROBLEM}",
                before=None,
                after=None,
                rows=[],
                columns=[],
            )
        shown = month or _current_month()
        reports = console.services.reports
        if reports is None:
            raise ServiceUnavailable("reports")
        document = await reports.call("GET", "/v1/reports/monthly", params={"month": shown})
        account = session.account
        sites = await console.sites()
        rows = []
        for site in document["sites"]:
            if not may_view_site(account, site["site_id"], site["state"]):
                continue
            figures = site["figures"]
            known = sites.get(site["site_id"])
            name = known.short_name if known else site["site_id"]
            rows.append(
                {
                    "site_id": site["site_id"],
                    "state": site["state"],
                    "name": name,
                    "cells": {n: _cell_text(n, c) for n, c in figures.items()},
                    "charts": [
                        bar_chart(
                            f"{name}: referrals and visits, {shown}", bars_from(figures, ACTIVITY)
                        ),
                        bar_chart(f"{name}: follow-ups, {shown}", bars_from(figures, FOLLOW_UPS)),
                        bar_chart(
                            f"{name}: minutes from request, {shown}",
                            bars_from(figures, TIMES),
                            " min",
                        ),
                    ],
                }
            )
        before, after = _neighbours(shown)
        return console.render(
            request,
            "reports.html",
            session=session,
            month=shown,
            before=before,
            after=after,
            rows=rows,
            columns=document["columns"],
            error=None,
        )
