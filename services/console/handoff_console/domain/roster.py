"""How the console reads a coach's standing: certification expiry warnings. Pure."""

from datetime import date, timedelta

EXPIRY_WARNING = timedelta(days=30)


def certification_warning(expires_on: date, today: date) -> str | None:
    """'expired' on or after the expiry date, 'expires soon' within 30 days, else None."""
    if expires_on <= today:
        return "expired"
    if expires_on - today <= EXPIRY_WARNING:
        return "expires soon"
    return None
