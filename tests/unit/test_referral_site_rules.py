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
        ("time_zone", "Mars/Base"),
        ("time_zone", ""),
        ("site_id", "MD_Mercy"),
    ],
)
def test_a_bad_detail_is_refused_naming_its_field(field: str, value: str) -> None:
    with pytest.raises(InvalidSite) as refused:
        checked_site(**{**GOOD, field: value})
    assert refused.value.field == field
