"""What a site may be, as a coordinator types it on the command line. Pure: no I/O.

The contract's `SiteFacts` checks shapes only (two capital letters for a state, 1 to 40
characters for a short name), so that events already written stay valid; a site entered
now is held to more: its short name goes into every page a coach reads on a lock screen.
"""

import unicodedata
from functools import cache
from zoneinfo import available_timezones

from pydantic import ValidationError

from handoff_platform.sms_text import gsm7
from handoff_referral.domain.referral import Site
from handoff_schemas.events import SiteFacts
from handoff_schemas.vocabulary import US_STATES

NAME_MAX = 200


class InvalidSite(ValueError):
    """A site's detail that cannot be stored; `field` names it (`short_name`, `state`…)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def checked_site(site_id: str, name: str, short_name: str, state: str, time_zone: str) -> Site:
    """The site, its details checked: a site id as the contract's SiteId; a name of 1 to
    `NAME_MAX` characters and a short name of 1 to 40, neither blank, nor with spaces at
    either end or doubled, nor holding a line break or another control or format character;
    a short name that a text shows as typed (GSM-7: "Ōtā" would read "Ota", an emoji
    nothing), since it is in every page; a USPS code of a state, DC or territory
    (`US_STATES`); the IANA time zone of a place (Area/Location: not "UTC", "Factory" or
    "localtime"). Raises InvalidSite naming the first detail that is not acceptable."""
    for field, text, longest in (("name", name, NAME_MAX), ("short_name", short_name, 40)):
        if not text.strip():
            raise InvalidSite(field, "must not be blank")
        if len(text) > longest:
            raise InvalidSite(field, f"at most {longest} characters")
        if any(unicodedata.category(c)[0] in "CZ" and c != " " for c in text):
            raise InvalidSite(field, "must not hold a line break or other control character")
        if text != text.strip() or "  " in text:
            raise InvalidSite(field, "no spaces at either end, nor two in a row")
    if (as_texted := gsm7(short_name)) != short_name:
        raise InvalidSite(
            "short_name",
            f"a text message would show it as {as_texted!r}: use letters, digits and"
            " punctuation a text can carry",
        )
    if state not in US_STATES:
        raise InvalidSite("state", f"{state!r} is not a USPS code of a US state or territory")
    if "/" not in time_zone or time_zone.startswith("Etc/") or time_zone not in _zones():
        raise InvalidSite(
            "time_zone", f"{time_zone!r} is not the IANA time zone of a place (America/New_York)"
        )
    try:
        facts = SiteFacts(site_id=site_id, short_name=short_name, state=state, time_zone=time_zone)
    except ValidationError as error:
        problem = error.errors(include_input=False, include_url=False)[0]
        raise InvalidSite(str(problem["loc"][0]), problem["msg"]) from None
    return Site(
        site_id=facts.site_id,
        name=name,
        short_name=facts.short_name,
        state=facts.state,
        time_zone=facts.time_zone,
    )


@cache
def _zones() -> frozenset[str]:
    """The IANA zones this machine's tz database knows (read once, when first needed: the
    scan is not for every command's start)."""
    return frozenset(available_timezones())
