"""What coaches and supervisors read (decision 0020): site-local times, requests named
by their reply code, supervisor notices told apart and folded into a digest."""

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from handoff_notify.domain import content
from handoff_notify.domain.content import SMS_SEGMENT, Unassigned, link_room
from handoff_notify.domain.links import LINK_PATH_CHARACTERS
from handoff_platform.sms_text import GSM7
from handoff_schemas.vocabulary import UnassignedReason, Urgency
from tests.support.patients import PHI_MARKERS

NY = "America/New_York"
LINK = "https://page.handoff-example.org/p/" + "x" * 38
# 01:03 UTC on 1 December is 20:03 the evening before in New York (EST, UTC-5).
ARRIVE_BY = datetime(2026, 12, 1, 1, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        (NY, "20:03 EST"),
        ("America/Chicago", "19:03 CST"),
        ("America/Los_Angeles", "17:03 PST"),
        ("Pacific/Honolulu", "15:03 HST"),
        (None, "01:03 UTC"),
    ],
)
def test_times_are_the_sites_wall_clock_with_its_zone(zone: str | None, shown: str) -> None:
    assert content.local_time(ARRIVE_BY, zone) == shown


def test_daylight_saving_time_shows_its_own_abbreviation() -> None:
    summer = datetime(2026, 7, 1, 1, 3, tzinfo=UTC)
    assert content.local_time(summer, NY) == "21:03 EDT"


def test_a_confirmation_names_the_request_by_code_and_the_local_arrival_time() -> None:
    text = content.assigned(
        "Mercy ED", ARRIVE_BY, ARRIVE_BY - timedelta(minutes=30), LINK, "B", NY
    ).text
    assert text == (
        f"Handoff: confirmed, the request B at Mercy ED is yours. Arrive by 20:03 EST "
        f"(30 min): {LINK}"
    )
    assert "UTC" not in text


@pytest.mark.parametrize("code", [None, "B", "ZZ"])
@pytest.mark.parametrize("zone", [NY, "Asia/Kathmandu", None])
@pytest.mark.parametrize(
    "site", ["Mercy ED", "Johns Hopkins Bayview Medical Center ED", "Hôpital Saint-Luc \u2013 Urg"]
)
def test_a_confirmation_is_one_segment_with_the_longest_link_allowed(
    code: str | None, zone: str | None, site: str
) -> None:
    """Issue #12: confirmations were 171-173 characters, two segments. With the longest
    public URL settings allow, the longest code and a far arrival they fit in 160."""
    longest_url = "https://" + "h" * (link_room() - LINK_PATH_CHARACTERS - len("https://"))
    link = f"{longest_url}/p/" + "x" * (LINK_PATH_CHARACTERS - len("/p/"))
    text = content.assigned(site, ARRIVE_BY, ARRIVE_BY - timedelta(minutes=999), link, code, zone)
    assert len(text.text) <= SMS_SEGMENT, (len(text.text), text.text)
    assert set(text.text) <= GSM7
    assert text.text.endswith(link)
    assert " is yours. Arrive by " in text.text
    if code:
        assert f"request {code} at " in text.text


def _unassigned(reference: str, minute: int, urgency: Urgency = Urgency.URGENT) -> Unassigned:
    at = datetime(2026, 12, 1, 5, minute, tzinfo=UTC)  # 00:minute EST
    return Unassigned("Mercy ED", at, reference, urgency, NY)


def test_a_supervisor_notice_names_urgency_reference_site_and_local_time() -> None:
    notice = content.unassigned(_unassigned("3F2A9C", 6))
    assert notice.text == (
        "Handoff: urgent request 3F2A9C at Mercy ED has no coach: nobody on call accepted it "
        "(00:06 EST). Please arrange cover."
    )
    assert notice.subject == "Handoff: unassigned request 3F2A9C at Mercy ED"
    assert len(notice.text) <= SMS_SEGMENT
    assert set(notice.text) <= GSM7


@pytest.mark.parametrize(
    ("reason", "nobody_reached", "why"),
    [
        (UnassignedReason.NOBODY_ON_CALL, False, "nobody is on call for it"),
        (UnassignedReason.LADDER_EXHAUSTED, True, "no page got through to a coach"),
        (UnassignedReason.LADDER_EXHAUSTED, False, "nobody on call accepted it"),
        (None, False, "nobody on call accepted it"),  # queued before notices kept the reason
    ],
)
def test_a_notice_says_why_the_request_has_no_coach_in_one_segment(
    reason: UnassignedReason | None, nobody_reached: bool, why: str
) -> None:
    notice = replace(_unassigned("3F2A9C", 6), reason=reason, nobody_reached=nobody_reached)
    assert content.unassigned(notice).text == (
        f"Handoff: urgent request 3F2A9C at Mercy ED has no coach: {why} (00:06 EST). "
        "Please arrange cover."
    )
    for urgency in Urgency:  # the longest site short name a site may have (40)
        longest = replace(notice, site_short_name="W" * 40, urgency=urgency)
        text = content.unassigned(longest).text
        assert len(text) <= SMS_SEGMENT, (len(text), text)
        assert set(text) <= GSM7


def test_two_notices_a_minute_apart_at_one_site_read_differently() -> None:
    first = content.unassigned(_unassigned("3F2A9C", 6)).text
    second = content.unassigned(_unassigned("81D0E4", 6, Urgency.ROUTINE)).text
    assert first != second


def test_a_referral_reference_is_six_hex_digits_of_its_id() -> None:
    assert content.short_reference("3f2a9c41-0d5e-4c1b-9a0e-2b7f6c8d9e01") == "3F2A9C"


def test_a_digest_counts_every_held_notice_and_names_them() -> None:
    held = [_unassigned(f"A0000{n}", 6 + n) for n in range(6)]
    digest = content.unassigned_digest(held)
    assert digest.text == (
        "Handoff: 6 more requests at Mercy ED have no coach (latest 00:11 EST): "
        "A00000 A00001 A00002 A00003 A00004 A00005. Please arrange cover."
    )
    assert not [marker for marker in PHI_MARKERS if marker in digest.text]


def test_a_referral_unassigned_again_is_counted_once_in_a_digest() -> None:
    """fresh34a: "33 more requests" named 19 referrals: one gone unassigned again counted twice."""
    held = [_unassigned("A00000", 6), _unassigned("A00001", 7), _unassigned("A00000", 9)]
    assert content.unassigned_digest(held).text == (
        "Handoff: 2 more requests at Mercy ED have no coach (latest 00:09 EST): "
        "A00001 A00000. Please arrange cover."
    )


def test_a_digest_of_one_reads_in_the_singular_and_a_long_one_is_cut_with_a_count() -> None:
    assert content.unassigned_digest([_unassigned("A00000", 6)]).text.startswith(
        "Handoff: 1 more request at Mercy ED has no coach (latest 00:06 EST): A00000."
    )
    many = content.unassigned_digest([_unassigned(f"B{n:05d}", 6) for n in range(11)]).text
    assert "B00007 +3. Please arrange cover." in many
    assert many.startswith("Handoff: 11 more requests")


@pytest.mark.parametrize("count", [1, 2, 6, 8, 9, 11, 40])
@pytest.mark.parametrize("sites", [1, 2, 3, 12, 20])
def test_a_digest_fits_one_segment_with_the_longest_site_names(count: int, sites: int) -> None:
    """fresh32: 6 notices at a 40-character site made a 167-character digest (185 at 11)."""
    names = [f"St. Mary's Regional Medical Center - M{n:02d}" for n in range(sites)]
    held = [
        replace(_unassigned(f"C{n:05d}", 6 + n % 50), site_short_name=names[n % sites])
        for n in range(count)
    ]
    digest = content.unassigned_digest(held)
    assert len(digest.text) <= SMS_SEGMENT, (len(digest.text), digest.text)
    assert set(digest.text) <= GSM7
    assert digest.text.endswith(". Please arrange cover.")
    shown = [n.reference for n in held if n.reference in digest.text]
    assert len(shown) >= min(count, 3)  # names shortened or counted first (fresh32b)
    assert len(shown) + _counted(digest.text) == count  # every one counted
    # The email's subject names the sites whole.
    assert all(str(n.site_short_name) in digest.subject for n in held)


def _counted(text: str) -> int:
    """The "+N" of a digest: the references it counts without naming them."""
    more = re.search(r" \+(\d+)\. Please", text)
    return int(more.group(1)) if more else 0


def test_a_digest_says_why_when_every_request_in_it_shares_one() -> None:
    on_call_nobody = [
        replace(_unassigned(f"D0000{n}", 6 + n), reason=UnassignedReason.NOBODY_ON_CALL)
        for n in range(3)
    ]
    assert content.unassigned_digest(on_call_nobody).text.startswith(
        "Handoff: 3 more requests at Mercy ED have no coach, nobody on call (latest"
    )
    unreached = [replace(n, reason=None, nobody_reached=True) for n in on_call_nobody]
    assert " have no coach, no page got through (latest" in (
        content.unassigned_digest(unreached).text
    )
    mixed = content.unassigned_digest([on_call_nobody[0], unreached[1]]).text
    assert " have no coach (latest" in mixed  # each was said singly before


def test_a_digest_counts_sites_whose_shortened_names_would_read_alike() -> None:
    """fresh32b: four St. Mary's EDs cut to 'St. Mary's Regi' told the supervisor nothing;
    the email's subject names them whole, as registered (not GSM-7 folded)."""
    names = [f"St. Mary's Regional Medical Center {s}" for s in ("North", "South", "East")]
    held = [
        replace(_unassigned(f"E0000{n}", 6 + n), site_short_name=name)
        for n, name in enumerate([*names, "Hôpital Saint-Luc"])
    ]
    digest = content.unassigned_digest(held)
    assert " at 4 sites have no coach " in digest.text
    assert len(digest.text) <= SMS_SEGMENT
    assert all(name in digest.subject for name in [*names, "Hôpital Saint-Luc"])
