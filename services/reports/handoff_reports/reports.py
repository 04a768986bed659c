"""Use case: a month's de-identified report, read from the read model."""

from handoff_platform.database import Connection
from handoff_reports.adapters.read_model import month_facts
from handoff_reports.domain.figures import Month, site_months
from handoff_reports.domain.suppression import SiteRow, deidentified


async def monthly_rows(
    connection: Connection, month: Month, state: str | None = None, site_id: str | None = None
) -> list[SiteRow]:
    """One published row per site with anything in `month` (optionally of one state
    and/or site), every cell through the small-cell rule; ordered by state, then site."""
    referrals, follow_ups = await month_facts(connection, month, state, site_id)
    return [deidentified(site) for site in site_months(month, referrals, follow_ups)]
