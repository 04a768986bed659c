"""What a site may be, as a coordinator types it (pure rules). The bad values are the ones a
fresh user got accepted (fresh29): a state that is no state, a blank name, a line break in
the short name that then showed in a coach's text."""

import pytest

from handoff_referral.domain.sites import InvalidSite, checked_site

GOOD = {
    "site_id": "md-mercy",
    "name": "Mercy Medical Center",
    "short_name": "Mercy ED",
    "state": "MD",
    "time_zone": "America/New_York",
}


def test_accents_a_text_can_carry_are_kept() -> None:
    assert checked_site(**{**GOOD, "short_name": "Señora Ñ ED"}).short_name == "Señora Ñ ED"
    assert checked_site(**{**GOOD, "time_zone": "Pacific/Guam", "state": "GU"}).state == "GU"


def test_a_site_as_typed_is_kept_as_typed() -> None:
    site = checked_site(**GOOD)
    assert (site.site_id, site.short_name, site.state, site.time_zone) == (
        "md-mercy",
        "Mercy ED",
        "MD",
        "America/New_York",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("state", "XX"),
        ("state", "ZZ"),
        ("state", "md"),
        ("name", ""),
        ("name", "   "),
        ("name", "x" * 201),
        ("short_name", "Mercy\nED"),
        ("short_name", "Mercy\u200bED"),  # a format character, invisible on a phone
        ("short_name", " "),
        ("short_name", "x" * 41),
        ("short_name", "Mercy\u2028ED"),  # a line separator (fresh29b)
        ("short_name", "\u3164"),  # a Hangul filler: invisible, "blank" to a person
        ("short_name", "T2 Delta \U0001f691"),  # an emoji a text drops
        ("short_name", " Mercy ED"),
        ("short_name", "Mercy  ED"),
        ("name", "Mercy Medical Center "),
        ("time_zone", "Mars/Base"),
        ("time_zone", ""),
        ("time_zone", "Factory"),
        ("time_zone", "localtime"),
        ("time_zone", "UTC"),
        ("time_zone", "Etc/GMT+5"),
        ("site_id", "MD_Mercy"),
    ],
)
def test_a_bad_detail_is_refused_naming_its_field(field: str, value: str) -> None:
    with pytest.raises(InvalidSite) as refused:
        checked_site(**{**GOOD, field: value})
    assert refused.value.field == field
