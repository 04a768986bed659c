"""Coaches' SMS replies as they type them, reply codes, and the texts that answer them."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handoff_notify.domain import content
from handoff_notify.domain.content import SMS_SEGMENT, OpenOffer
from handoff_notify.domain.offer import CoachOffer, OfferState
from handoff_notify.domain.replies import (
    CODE_LETTERS,
    CODES,
    Answer,
    Keyword,
    NotUnderstood,
    OffUntil,
    Reply,
    ReplyReading,
    SeveralCodes,
    Unclear,
    parse_reply,
    read_reply,
)
from handoff_notify.domain.reply_codes import choose_code
from handoff_platform.sms_text import GSM7
from handoff_schemas.vocabulary import CoachResponse, Urgency, WithdrawReason
from tests.support.patients import PHI_MARKERS

NOW = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
NY = "America/New_York"
ACCEPT, DECLINE = CoachResponse.ACCEPTED, CoachResponse.DECLINED
# A production-length public URL: the link is it, "/p/" and a 38-character token.
LINK = "https://page.handoff-example.org/p/" + "x" * 38

ACCEPTS = [
    "1",
    "y",
    "Y.",
    " yes ",
    "YES!",
    "Yes",
    "yeah",
    "ok",
    "OK",
    "Ok.",
    "okay",
    "Okay!!",
    "Accept",
    "accepted",
    "ACCEPT.",
    "on my way",
    "On my way!",
    "yes on my way",
    "Yes, on my way.",
    "omw",
    "OMW 🚗",
    "👍",
    "👍🏽",
    "ok 👍",
    "\uff2f\uff2b",  # full-width OK, as some keyboards send it
    "yes\u00a0please",  # a no-break space
    "sure, I'll be there",
    "I\u2019ll be there, on my way",
    "1.",
    "  1  ",
    # What the fresh-eyes tester typed (decision 0020)
    "I'll be there",
    "i am on my way",
    "I will be there",
    "k",
    "K.",
    "kk",
    "yea",
    "Yes sir",
    "sure thing",
    "\u2705",  # ✅
    "\U0001f197",  # 🆗
    "\U0001f44c",  # 👌
    "okey",
    "got it, omw",
]
DECLINES = [
    "2",
    "n",
    "N!",
    "no",
    "No.",
    "NO",
    "nope",
    "decline",
    "Declined",
    "can't",
    "can\u2019t",  # the curly apostrophe phones type
    "can\u2018t",
    "cant",
    "cannot",
    "can not",
    "Can't make it",
    "Sorry, can\u2019t make it tonight",
    "not ok",
    "Not OK.",
    "no way",
    "not on my way",
    "I'm not on my way",
    "can't accept",
    "don\u2019t accept",
    "won't",
    "no thanks",
    "busy",
    "👎",
    "2.",
    "\u274c",  # ❌
    "no no",
]
UNCLEAR = [
    "not declining",
    "don't decline",
    "don\u2019t decline",
    "no ok",
    "no yes",
    "No, OK",
    "yes no",
    "ok no",
    "1 2",
    "👍 👎",
    "never decline",
]
NOT_UNDERSTOOD = [
    "",
    "   ",
    "12",
    "21",
    "maybe",
    "?",
    "🙂",
    "yes but the patient in bay 4 is my neighbour",
    "ok but busy for an hour",  # "busy" is a no; "ok" a yes: neither wins
    "call me",
    "who is this",
    "b",  # a code with no answer
    "1x",  # X is no code
    "3",
]


@pytest.mark.parametrize("body", ACCEPTS)
def test_replies_people_type_to_accept_accept(body: str) -> None:
    assert parse_reply(body) == Answer(ACCEPT)


@pytest.mark.parametrize("body", DECLINES)
def test_replies_people_type_to_decline_decline(body: str) -> None:
    assert parse_reply(body) == Answer(DECLINE)


@pytest.mark.parametrize("body", UNCLEAR)
def test_mixed_signals_and_negated_declines_are_asked_about_never_guessed(body: str) -> None:
    assert parse_reply(body) == Unclear()


def test_an_unclear_reply_keeps_the_code_it_named() -> None:
    assert parse_reply("no ok B") == Unclear("B")
    assert parse_reply("not declining 2C") == Unclear("C")
    assert parse_reply("not H yes H") == Unclear("H")  # fresh34e: recorded as a decline
    assert parse_reply("1H 1H") == Answer(ACCEPT, "H")


def test_one_answer_naming_several_requests_is_asked_about_one_a_text() -> None:
    """fresh33: "1E 1F" got the help text, as if the coach had written nonsense."""
    assert parse_reply("1E 1F") == SeveralCodes((("E", ACCEPT), ("F", ACCEPT)))
    assert parse_reply("yes b c") == SeveralCodes((("B", ACCEPT), ("C", ACCEPT)))
    assert parse_reply("2F, 2E") == SeveralCodes((("F", DECLINE), ("E", DECLINE)))
    assert parse_reply("1E 1E") == Answer(ACCEPT, "E")  # the same request twice is one
    assert content.one_request_a_text((("E", ACCEPT), ("F", ACCEPT))) == (
        "Handoff: one request a text, please. Nothing was changed. Reply 1E, then 1F."
    )


@pytest.mark.parametrize(
    "body",
    [
        "1S 2R",
        "1S2R",
        "1S and 2R",
        "yes S no R",
        "S1 R2",
        "1s, 2r",
        "S1R2",
        "yes please S, no for R",
    ],
)
def test_a_different_answer_to_each_of_several_requests_is_asked_one_a_text(body: str) -> None:
    """fresh33c: "1S 2R" (yes to S, no to R) and "1S1R" got the help text."""
    reading = parse_reply(body)
    assert reading == SeveralCodes((("S", ACCEPT), ("R", DECLINE)))
    assert content.one_request_a_text(reading.answers) == (
        "Handoff: one request a text, please. Nothing was changed. Reply 1S, then 2R."
    )


@pytest.mark.parametrize("body", ["1S 1R", "1S1R", "1S and 1R", "1S then 1R", "yes to S, R"])
def test_the_same_answer_to_several_requests_written_together_is_asked_one_a_text(
    body: str,
) -> None:
    assert parse_reply(body) == SeveralCodes((("S", ACCEPT), ("R", ACCEPT)))


@pytest.mark.parametrize(
    "body",
    [
        "1S 2R 1",
        "1S 2S",
        "yes S R no",
        "not ok S 1R",
        "1S no",
        # fresh34c: K, Y, N and I read as words, and C was accepted; "not" flipped both
        "1K 1C",
        "1Y 1C",
        "2N 2C",
        "1I 1C",
        "B1 K1",
        "not B yes C",
        "cant B, ok C",
        "dont B 1C",
    ],
)
def test_several_codes_whose_answers_cannot_be_paired_are_not_guessed(body: str) -> None:
    assert not isinstance(parse_reply(body), SeveralCodes | Answer)


@pytest.mark.parametrize("body", NOT_UNDERSTOOD)
def test_replies_that_cannot_be_read_safely_are_not_understood(body: str) -> None:
    assert parse_reply(body) == NotUnderstood()


@pytest.mark.parametrize(
    "body",
    [
        "no",
        "not ok",
        "can't",
        "can\u2019t",
        "no way",
        "not on my way",
        "cannot accept",
        "N",
        "no ok",
        "no yes",
        "not declining",
        "don't decline",
        "👎",
        "\u274c",
        "no 👍",
        "won't be there",
    ],
)
def test_a_negative_is_never_read_as_an_accept(body: str) -> None:
    for variant in (body, body.upper(), f"{body}.", f" {body}! ", f"{body} B", f"B {body}"):
        reply = parse_reply(variant)
        assert not (isinstance(reply, Answer) and reply.response is ACCEPT), variant


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        ("1B", Answer(ACCEPT, "B")),
        ("1b", Answer(ACCEPT, "B")),
        ("b1", Answer(ACCEPT, "B")),
        ("B1", Answer(ACCEPT, "B")),
        ("1 B", Answer(ACCEPT, "B")),
        ("Y B", Answer(ACCEPT, "B")),
        ("yes b", Answer(ACCEPT, "B")),
        ("B yes", Answer(ACCEPT, "B")),
        ("ok c", Answer(ACCEPT, "C")),
        ("accept D.", Answer(ACCEPT, "D")),
        ("C 👍", Answer(ACCEPT, "C")),
        ("2C", Answer(DECLINE, "C")),
        ("c2", Answer(DECLINE, "C")),
        ("no c", Answer(DECLINE, "C")),
        ("C no", Answer(DECLINE, "C")),
        ("decline Z", Answer(DECLINE, "Z")),
        ("can\u2019t do B", NotUnderstood()),  # "do" is not in the vocabulary
        ("can\u2019t B", Answer(DECLINE, "B")),
    ],
)
def test_an_answer_with_a_code_names_that_offer_in_either_order(body: str, reply: Reply) -> None:
    assert parse_reply(body) == reply


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", Keyword.OPT_OUT),
        ("stop", Keyword.OPT_OUT),
        ("Stop.", Keyword.OPT_OUT),
        ("STOPALL", Keyword.OPT_OUT),
        ("unsubscribe", Keyword.OPT_OUT),
        ("CANCEL", Keyword.OPT_OUT),
        ("end", Keyword.OPT_OUT),
        ("Quit", Keyword.OPT_OUT),
        ("START", Keyword.OPT_IN),
        ("unstop", Keyword.OPT_IN),
        ("HELP", Keyword.HELP),
        ("help?", Keyword.HELP),
        ("info", Keyword.HELP),
        ("STOP ALL", Keyword.OPT_OUT),
        ("Stop all.", Keyword.OPT_OUT),
        ("stopall", Keyword.OPT_OUT),
        ("stop please", Keyword.OPT_OUT),
        ("Stop texting me", Keyword.OPT_OUT),
        ("UNSUBSCRIBE ME", Keyword.OPT_OUT),
        ("HELP ME", Keyword.HELP),
        ("Help me please", Keyword.HELP),
        ("INFO please", Keyword.HELP),
    ],
)
def test_carrier_keywords(body: str, keyword: Keyword) -> None:
    assert parse_reply(body) is keyword
    assert parse_reply(body, opted_out=True) is keyword


@pytest.mark.parametrize(
    ("body", "keyword"),
    [("OFF", Keyword.UNAVAILABLE), ("off.", Keyword.UNAVAILABLE), ("On", Keyword.AVAILABLE)],
)
def test_off_and_on_alone_mark_a_coach_unavailable_and_available(
    body: str, keyword: Keyword
) -> None:
    assert parse_reply(body) is keyword


@pytest.mark.parametrize(
    "body",
    [
        "off today",
        "sick",
        "OFF please",
        "I'm sick today",
        "off sick",
        "Sick today, sorry",
        "off for the day",
        "unavailable",
        "off call",
    ],
)
def test_a_coachs_own_words_for_off_mark_them_unavailable(body: str) -> None:
    """Issue #15: "off today", "sick" and "OFF please" were not understood, and silent."""
    assert parse_reply(body) is Keyword.UNAVAILABLE
    assert parse_reply(body, opted_out=True) is Keyword.UNAVAILABLE


@pytest.mark.parametrize("body", ["on please", "I'm back", "back on", "on call again"])
def test_a_coachs_own_words_for_on_mark_them_available(body: str) -> None:
    assert parse_reply(body) is Keyword.AVAILABLE


@pytest.mark.parametrize(
    "body", ["not sick", "ok off", "off on", "back", "sick of this", "no off", "off 1", "hello"]
)
def test_off_and_on_with_anything_else_in_them_are_not_read_as_off_or_on(body: str) -> None:
    assert parse_reply(body) not in (Keyword.UNAVAILABLE, Keyword.AVAILABLE)


def test_on_inside_an_answer_is_still_the_answer() -> None:
    assert parse_reply("on my way") == Answer(ACCEPT)


def test_yes_opts_back_in_only_after_stop() -> None:
    assert parse_reply("YES", opted_out=True) is Keyword.OPT_IN
    assert parse_reply("YES") == Answer(ACCEPT)
    assert parse_reply("1", opted_out=True) == Answer(ACCEPT)


def test_codes_are_neither_answers_nor_easily_misread() -> None:
    assert not set("AIKLNOUXY") & set(CODE_LETTERS)
    assert len(CODE_LETTERS) == 17


def test_a_new_code_is_one_the_phone_has_not_had_for_a_day() -> None:
    assert choose_code({}, set(), NOW) == "B"
    recent = {"B": NOW - timedelta(hours=2), "C": NOW - timedelta(hours=23)}
    assert choose_code(recent, set(), NOW) == "D"
    day_old = {"B": NOW - timedelta(hours=24), "C": NOW - timedelta(hours=1)}
    assert choose_code(day_old, set(), NOW) == "B"


def test_past_the_seventeen_letters_a_phone_gets_two_letter_codes_not_a_reused_one() -> None:
    """Issue #12: the 18th offer of the day wrapped to "B" (the 17 letters in 19 minutes)."""
    used = {code: NOW - timedelta(minutes=n) for n, code in enumerate(CODE_LETTERS)}
    assert choose_code(used, set(), NOW) == "BB"
    given: dict[str, datetime] = {}
    for minute in range(len(CODES)):
        given[choose_code(given, set(), NOW + timedelta(minutes=minute))] = NOW
    assert sorted(given) == sorted(CODES)  # every code once before any comes back


def test_two_letter_codes_are_easy_to_type_and_never_a_word_a_reply_holds() -> None:
    pairs = [code for code in CODES if len(code) == 2]
    assert len(CODES) == len(set(CODES)) == 17 + len(pairs) > 300
    assert all(set(code) <= set(CODE_LETTERS) for code in pairs)
    assert "BE" not in CODES  # "I'll be there"
    assert "ME" not in CODES  # "HELP ME"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("1BC", Answer(ACCEPT, "BC")),
        ("BC 1", Answer(ACCEPT, "BC")),
        ("Y BC", Answer(ACCEPT, "BC")),
        ("bc1", Answer(ACCEPT, "BC")),
        ("(bc) OK!", Answer(ACCEPT, "BC")),
        ("2zz", Answer(DECLINE, "ZZ")),
        ("no thanks ZW", Answer(DECLINE, "ZW")),
        ("yes no BC", Unclear("BC")),
        ("1B", Answer(ACCEPT, "B")),
        ("1 be there", Answer(ACCEPT)),
        ("1BE", NotUnderstood()),
        ("ok1", NotUnderstood()),
        (
            "1 B C",
            SeveralCodes((("B", CoachResponse.ACCEPTED), ("C", CoachResponse.ACCEPTED))),
        ),  # one a text, please
    ],
)
def test_two_letter_codes_read_in_either_order(typed: str, expected: object) -> None:
    assert parse_reply(typed) == expected
    assert ReplyReading.from_json(read_reply(typed).to_json()) == read_reply(typed)


def test_with_every_code_used_today_the_longest_unused_free_one_is_taken() -> None:
    used = {code: NOW - timedelta(minutes=n) for n, code in enumerate(CODES)}
    oldest = CODES[-1]
    assert choose_code(used, set(), NOW) == oldest
    assert choose_code(used, {oldest}, NOW) == CODES[-2]
    assert choose_code(used, set(CODES), NOW) == oldest  # shared, not refused


@pytest.mark.parametrize("code", [None, "B", "Z", "ZZ"])
@pytest.mark.parametrize("urgency", list(Urgency))
@pytest.mark.parametrize(
    "site", ["Mercy ED", "Johns Hopkins Bayview Medical Center ED", "Hôpital Saint-Luc \u2013 Urg"]
)
def test_an_offer_sms_is_one_gsm7_segment_without_phi(
    code: str | None, urgency: Urgency, site: str
) -> None:
    text = content.offer(site, urgency, LINK, code).text
    assert len(text) <= SMS_SEGMENT, (len(text), text)
    assert set(text) <= GSM7, set(text) - GSM7
    assert text.endswith(LINK)
    assert not [marker for marker in PHI_MARKERS if marker in text]


def test_an_offer_sms_shows_its_code() -> None:
    several = content.offer("Mercy ED", Urgency.URGENT, LINK, "C").text
    head = "Handoff: urgent request at Mercy ED."
    assert several == f"{head} Reply 1C to accept, 2C to decline, or open {LINK}"


def test_an_email_page_asks_for_the_link_not_a_reply_nobody_reads() -> None:
    email = content.offer("Mercy ED", Urgency.URGENT, LINK, replies_read=False)
    assert email.text == (
        f"Handoff: urgent request at Mercy ED. Open this link to accept or decline: {LINK}"
    )
    assert "Reply" not in email.text
    assert "Press 1" in email.spoken  # a call still takes the keypad


def test_a_bare_answer_with_several_open_offers_names_each_so_they_differ() -> None:
    """Two requests at one site a minute apart: code, urgency and age tell them apart, and
    one paged under a minute ago is "just now", never "0 min ago"."""
    question = content.which_offer(
        [
            OpenOffer("B", "Mercy ED", NOW - timedelta(minutes=1, seconds=30), Urgency.URGENT, NY),
            OpenOffer("C", "Mercy ED", NOW - timedelta(seconds=40), Urgency.ROUTINE, NY),
        ],
        NOW,
    )
    assert question == (
        "Handoff: which request? B = urgent, Mercy ED, 1 min ago; C = routine, Mercy ED, "
        "just now. Reply 1B to accept or 2B to decline; use the code you mean."
    )
    assert len(question) <= SMS_SEGMENT


def test_which_request_stays_one_segment_by_shortening_what_it_can() -> None:
    """Three requests with long site names: the urgency goes, then the sites shorten; every
    request is still named by code and age."""
    offers = [
        OpenOffer(code, "St. Bartholomew's Regional ED", NOW - timedelta(minutes=m), u)
        for code, m, u in (
            ("B", 3, Urgency.URGENT),
            ("C", 0, Urgency.URGENT),
            ("D", 200, Urgency.ROUTINE),
        )
    ]
    question = content.which_offer(offers, NOW)
    assert len(question) <= SMS_SEGMENT, question
    for named in ("B = ", "C = ", "D = ", "3 min ago", "just now", "3 h ago"):
        assert named in question
    assert "0 min" not in question


def test_an_unclear_reply_is_asked_about_with_the_code_to_use() -> None:
    assert content.unclear(["B", "C"]) == (
        "Handoff: was that a yes or a no? Nothing was changed. Reply 1B to accept or 2B to decline."
    )
    assert "Nothing was changed" in content.unclear([])


@pytest.mark.parametrize("reason", [WithdrawReason.CANCELLED, WithdrawReason.AT_CAPACITY])
def test_a_notice_about_an_offer_names_it_by_its_code(reason: WithdrawReason) -> None:
    text = content.closed("Mercy ED", OfferState.WITHDRAWN, reason, "B")
    assert "request B at Mercy ED" in text
    assert len(text) <= SMS_SEGMENT
    thanks = content.reply_acknowledgement(True, "Mercy ED", LINK, "B")
    assert "confirming you for the request B at Mercy ED" in thanks
    assert "request B at Mercy ED" in content.reply_acknowledgement(False, "Mercy ED", LINK, "B")


@pytest.mark.parametrize(
    ("state", "reason", "says"),
    [
        (OfferState.WITHDRAWN, WithdrawReason.FILLED, "filled by another coach"),
        (OfferState.WITHDRAWN, WithdrawReason.CANCELLED, "was cancelled"),
        (OfferState.WITHDRAWN, WithdrawReason.EXPIRED, "has expired"),
        (OfferState.WITHDRAWN, WithdrawReason.AT_CAPACITY, "at your limit of open requests"),
        (OfferState.OPEN, None, "has expired"),  # open, but past its expiry
        # Passed on after a STOP (issue #12): not "expired".
        (OfferState.WITHDRAWN, WithdrawReason.UNREACHABLE, "because texts to this number were"),
        (OfferState.ACCEPTED, None, "we are confirming it"),
        (OfferState.DECLINED, None, "you declined"),
        (OfferState.ASSIGNED, None, "is yours"),
    ],
)
def test_an_answer_to_a_closed_offer_says_what_became_of_it(
    state: OfferState, reason: WithdrawReason | None, says: str
) -> None:
    text = content.closed("Mercy ED", state, reason)
    assert says in text
    assert "Mercy ED" in text
    assert len(text) <= SMS_SEGMENT


def test_an_expired_offer_is_not_no_action_needed_when_cover_is_still_wanted() -> None:
    """Issue #12: a supervisor answering their own expired offer of a request they were
    just told has no coach was told "No action needed"."""
    plain = content.closed("Mercy ED", OfferState.OPEN, None, "ZZ")
    assert plain == "Handoff: the request ZZ at Mercy ED has expired; your answer was not recorded."
    cover = content.closed("Mercy ED", OfferState.OPEN, None, "ZZ", still_unassigned=True)
    assert cover == (
        "Handoff: the request ZZ at Mercy ED has expired, and it still has no coach. "
        "Please arrange cover."
    )
    assert len(cover) <= SMS_SEGMENT
    filled = content.closed(
        "Mercy ED", OfferState.WITHDRAWN, WithdrawReason.FILLED, "B", still_unassigned=True
    )
    assert "filled by another coach" in filled


def test_help_names_the_program_and_the_supervisor_line_in_one_segment() -> None:
    text = content.help_text("Handoff peer recovery paging", "+14105550100")
    assert text.startswith("Handoff peer recovery paging: reply 1 or YES to accept, 2 or NO")
    assert "Supervisor: +14105550100." in text
    assert "STOP" in text
    assert len(text) <= SMS_SEGMENT


def test_the_first_page_may_not_leave_after_the_page_deadline_but_fallbacks_may() -> None:
    offer = CoachOffer(
        OfferState.OPEN, NOW + timedelta(minutes=5), page_deadline=NOW + timedelta(minutes=1)
    )
    assert offer.may_page(NOW, first_page_out=False)
    assert not offer.may_page(NOW + timedelta(minutes=2), first_page_out=False)
    assert offer.may_page(NOW + timedelta(minutes=2), first_page_out=True)
    assert not offer.may_page(NOW + timedelta(minutes=5), first_page_out=True)
    assert CoachOffer(OfferState.OPEN, NOW + timedelta(minutes=5)).may_page(
        NOW, first_page_out=False
    )


_NEGATIVE_PIECES = ["no", "not", "can't", "cannot", "don't", "won't", "never", "2", "n", "nope"]
_NEGATIVE_PIECES += ["decline", "busy", "👎", "\u274c", "no way", "no thanks", "nah", "unable"]
_ANY_PIECES = [*_NEGATIVE_PIECES, "1", "y", "yes", "ok", "k", "okey", "accept", "omw", "B"]
_ANY_PIECES += ["on my way", "I'll be there", "sure thing", "👍", "\u2705", "\U0001f197", "sir"]
_ANY_PIECES += ["thanks", "please", "I'm", ",", ".", "!", "STOP", "help", "all", "me"]


@settings(max_examples=400, deadline=None)
@given(
    before=st.lists(st.sampled_from(_ANY_PIECES), max_size=4),
    negative=st.sampled_from(_NEGATIVE_PIECES),
    after=st.lists(st.sampled_from(_ANY_PIECES), max_size=4),
    upper=st.booleans(),
)
def test_no_reply_with_a_negative_in_it_is_ever_read_as_an_accept(
    before: list[str], negative: str, after: list[str], upper: bool
) -> None:
    body = " ".join([*before, negative, *after])
    body = body.upper() if upper else body
    reply = parse_reply(body)
    assert not (isinstance(reply, Answer) and reply.response is ACCEPT), body


def test_help_names_off_when_the_segment_has_room() -> None:
    assert content.help_text("Handoff", "+14105550100").endswith(" OFF: go off call.")
    assert "OFF" not in content.help_text("Handoff peer recovery paging", "+14105550100")


def test_off_names_its_end_on_the_sites_clock_and_what_was_passed_on() -> None:
    # 21:00 UTC is 16:00 EST; 24 h on is tomorrow, so the day is named.
    until = NOW + timedelta(hours=24)
    text = content.went_off("Handoff", until, "America/New_York", NOW, passed_on=2)
    assert text == (
        "Handoff: you are off call until Tue 16:00 EST; no requests meanwhile. Text ON to come "
        "back. 2 open request(s) passed on."
    )
    assert len(text) <= SMS_SEGMENT
    assert set(text) <= GSM7
    later_today = content.went_off("Handoff", NOW + timedelta(hours=2), "America/New_York", NOW)
    assert "until 18:00 EST;" in later_today
    assert "passed on" not in later_today
    assert "until 23:00 UTC;" in content.went_off("Handoff", NOW + timedelta(hours=2), None, NOW)


def test_on_says_whether_anything_was_off() -> None:
    assert content.came_on("Handoff", was_off=True) == (
        "Handoff: you are back on call; requests come on your shifts."
    )
    not_off = content.came_on("Handoff peer recovery paging", was_off=False)
    assert "you were not marked off, so nothing changed" in not_off
    assert len(not_off) <= SMS_SEGMENT
    nothing_open = content.no_open_request("Handoff peer recovery paging")
    assert "you have no open request" in nothing_open
    assert len(nothing_open) <= SMS_SEGMENT


@pytest.mark.parametrize(
    ("body", "end"),
    [
        ("off until 6pm", (18, 0)),
        ("Off till 18:30", (18, 30)),
        ("sick til 7 am", (7, 0)),
        ("OFF until 6 p.m.", (18, 0)),
        ("I'm off until 6:30pm!", (18, 30)),
        ("off until 12am", (0, 0)),
        ("off until 12pm", (12, 0)),
    ],
)
def test_off_with_an_end_on_the_clock_names_that_time(body: str, end: tuple[int, int]) -> None:
    assert parse_reply(body) == OffUntil(*end)
    reading = read_reply(body)
    assert ReplyReading.from_json(reading.to_json()) == reading  # spooled and read back


@pytest.mark.parametrize(
    "body",
    [
        "off until 6",
        "off until 13pm",
        "off until 6:75pm",
        "hello until 6pm",
        "not sick until 6pm",
        "off until 6pm ok",
        "ok until 6pm",
    ],
)
def test_an_end_that_is_unclear_or_without_an_off_is_not_understood(body: str) -> None:
    assert parse_reply(body) == NotUnderstood()


def test_an_off_end_is_the_next_such_time_on_the_sites_clock_within_a_day() -> None:
    # NOW is 16:00 EST: 18:00 is today, 15:00 tomorrow.
    zone = "America/New_York"
    assert content.next_wall_time(NOW, 18, 0, zone) == NOW + timedelta(hours=2)
    assert content.next_wall_time(NOW, 15, 0, zone) == NOW + timedelta(hours=23)
    assert content.next_wall_time(NOW, 16, 0, zone) == NOW + timedelta(hours=24)
    assert content.next_wall_time(NOW, 23, 0, None) == NOW + timedelta(hours=2)
    # 02:30 does not exist on 2027-03-14 in New York: read before the gap, 03:30 EDT.
    spring = datetime(2027, 3, 14, 5, 0, tzinfo=UTC)  # 00:00 EST
    assert content.next_wall_time(spring, 2, 30, zone) == datetime(2027, 3, 14, 7, 30, tzinfo=UTC)
