"""SMS replies as coaches type them, read into an answer, a carrier keyword, or nothing.

A reply is normalised (Unicode NFKC, case, curly apostrophes, punctuation, emoji)
and split into words; "1B" and "b1" are split into the answer and the code. Every
word must be one this module knows: an answer word, a code letter, a carrier
keyword or a little filler ("thanks", "I'm"). Anything else makes the reply not
understood, because a reply with an unknown word in it ("ok but busy") cannot be
read safely. A negation never becomes an accept: a reply with both an accept and
a decline in it is a decline when a negation word governs the accept ("not ok",
"not on my way", "can't accept"). Every other mix is unclear and answered with a
question, never a guess: a bare "no" before an accept ("no ok", "no yes": "no, ok"
or "no problem, ok"?), a negated decline ("not declining", "don't decline"), or an
accept beside a decline ("yes no").

Codes are single letters that are neither answers (Y, N) nor easily misread
(I, L, O look like digits; A, K, U and X are words or sign-offs in a text), then,
once a phone has had all 17 within a day, two of those letters ("BC"), read in
either order beside the answer ("1BC", "BC 1", "Y BC"); a pair that is a word a
reply may hold ("be", "me") is never a code.
The vocabulary is listed in docs/decisions/0013-reply-codes-and-carrier-keywords.md,
docs/decisions/0020-what-coaches-and-supervisors-read.md and, for a coach's own words for
OFF / ON ("off today", "sick", "I'm back"), the issue 15 addendum of
docs/decisions/0017-schedules-rotations-and-layers.md.
"""

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from handoff_schemas.vocabulary import CoachResponse

CODE_LETTERS = "BCDEFGHJMPQRSTVWZ"


class Keyword(StrEnum):
    """Carrier keywords (CTIA): the carrier answers STOP itself; we answer HELP. And the
    coach's own OFF / ON: unavailable for now, available again (decision 0017)."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    UNAVAILABLE = "unavailable"
    AVAILABLE = "available"


@dataclass(frozen=True)
class Answer:
    """An accept or decline, for the offer with `code` (upper case), or unnamed (None)."""

    response: CoachResponse
    code: str | None = None


@dataclass(frozen=True)
class NotUnderstood:
    """Nothing in the reply may be acted on: the coach gets the help text."""


@dataclass(frozen=True)
class Unclear:
    """The reply holds both a yes and a no, or a negated no: nothing is changed and the
    coach is asked to answer 1 or 2. `code` as in `Answer`."""

    code: str | None = None


@dataclass(frozen=True)
class OffUntil:
    """A coach's OFF with an end on the wall clock ("off until 6pm", "sick till 18:30"):
    `hour` (0-23) and `minute`, the next such time on the site's clock."""

    hour: int
    minute: int


@dataclass(frozen=True)
class SeveralCodes:
    """Answers naming two or more requests at once ("1E 1F", "1S 2R"): nothing is changed
    and the coach is asked to answer one request a text, since which of them a single yes
    can take (capacity, a request taken meanwhile) is not theirs to guess. `answers`: each
    code (upper case) with the answer given it, in the order written."""

    answers: tuple[tuple[str, CoachResponse], ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.answers)


Reply = Answer | Keyword | NotUnderstood | Unclear | OffUntil | SeveralCodes

_OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit"})
_OPT_IN = frozenset({"start", "unstop"})
_HELP = frozenset({"help", "info"})
# Words a keyword may come with ("STOP ALL", "HELP ME", "stop texting me please"): CTIA
# asks that opt-outs be honoured however they are phrased, and so is a call for help.
_KEYWORD_COMPANIONS = frozenset(
    {"all", "me", "please", "now", "texting", "texts", "messages", "us", "pls", "plz"}
)

_ACCEPT, _DECLINE, _NEGATOR, _FILLER = "accept", "decline", "negator", "filler"
_BARE_NO = "bare_no"  # a no on its own, or one that leaves what it denies unclear

# Longest phrases first; a phrase is words after normalisation (apostrophes dropped).
_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("on", "my", "way"), _ACCEPT),
    (("ill", "be", "there"), _ACCEPT),
    (("will", "be", "there"), _ACCEPT),
    (("be", "right", "there"), _ACCEPT),
    (("sure", "thing"), _ACCEPT),
    (("got", "it"), _ACCEPT),
    (("can", "not"), _NEGATOR),
    (("no", "way"), _DECLINE),
    (("no", "thanks"), _DECLINE),
    (("no", "thank", "you"), _DECLINE),
)
_WORDS: dict[str, str] = {
    **dict.fromkeys(
        (
            "1",
            "y",
            "yes",
            "yeah",
            "yea",
            "ya",
            "yep",
            "yup",
            "ok",
            "okay",
            "okey",
            "oki",
            "okie",
            "k",
            "kk",
            "sure",
            "accept",
            "accepted",
            "accepting",
            "omw",
            "coming",
            "thumbsup",
        ),
        _ACCEPT,
    ),
    **dict.fromkeys(
        (
            "2",
            "n",
            "nope",
            "nah",
            "decline",
            "declined",
            "declining",
            "unable",
            "busy",
            "pass",
            "thumbsdown",
            "cross",
        ),
        _DECLINE,
    ),
    # A negator on its own is a decline too; before an accept it turns it into one.
    **dict.fromkeys(("not", "cant", "cannot", "dont", "wont", "never"), _NEGATOR),
    "no": _BARE_NO,
    **dict.fromkeys(
        (
            "i",
            "im",
            "ill",
            "am",
            "sir",
            "maam",
            "will",
            "be",
            "there",
            "thanks",
            "thank",
            "you",
            "thx",
            "ty",
            "please",
            "sorry",
            "it",
            "this",
            "one",
            "the",
            "request",
            "make",
            "now",
            "today",
            "tonight",
            "right",
            "and",
            "then",
            "also",
            "to",
            "for",
            "both",
        ),
        _FILLER,
    ),
}
# 👍 ✅ 🆗 👌 and 👎 ❌ 🚫 (any skin tone) are answers; every other emoji and symbol is
# dropped. ✔ is left out: NFKC keeps it, and some keyboards send it for "done".
_EMOJI_ANSWERS = {
    "\U0001f44d": " thumbsup ",
    "\u2705": " thumbsup ",
    "\U0001f197": " thumbsup ",
    "\U0001f44c": " thumbsup ",
    "\U0001f44e": " thumbsdown ",
    "\u274c": " cross ",
    "\U0001f6ab": " cross ",
}
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2018\u2019\u02bc\u2032\u0060\u00b4", "'"))
_NOT_A_WORD = re.compile(r"[^0-9a-z]+")
_CODED = re.compile(r"^(?:([12])([a-z]{1,2})|([a-z]{1,2})([12]))$")
_RUN_OF_CODES = re.compile(r"^(?:[12][a-z]{1,2}){2,}$")
_RUN_OF_CODES_LETTERS_FIRST = re.compile(r"^(?:[a-z]{1,2}[12]){2,}$")


def _run_of_codes(token: str) -> list[str]:
    """ "1s1r" or "s1r2" (answers written without a space) as ["1s", "1r"] or ["s1", "r2"];
    any other token as is."""
    if _RUN_OF_CODES.match(token) is not None:
        return re.findall(r"[12][a-z]{1,2}", token)
    if _RUN_OF_CODES_LETTERS_FIRST.match(token) is not None:
        return re.findall(r"[a-z]{1,2}[12]", token)
    return [token]


# Every reply code in the order a phone is given them: the 17 letters, then pairs of
# them (287 once the pairs that are words are left out), so a phone gets 304 offers in
# a day before a code comes back (issue #12: 17 wrapped within 20 minutes).
_WORDS_A_REPLY_HOLDS = (
    set(_WORDS) | _KEYWORD_COMPANIONS | _OPT_OUT | _OPT_IN | _HELP | {"on", "off"}
)
CODES: tuple[str, ...] = tuple(CODE_LETTERS) + tuple(
    first + second
    for first in CODE_LETTERS
    for second in CODE_LETTERS
    if (first + second).lower() not in _WORDS_A_REPLY_HOLDS
)
_CODE_SET = frozenset(CODES)


def words(body: str) -> list[str]:
    """The reply's words after normalisation: NFKC, case-folded, curly apostrophes made
    straight then dropped ("can\u2019t" → "cant"), punctuation and emoji removed, "1B",
    "b1", "1BC" and "bc1" split in two (two letters only when they are a code)."""
    text = unicodedata.normalize("NFKC", body).translate(_APOSTROPHES).casefold()
    for emoji, word in _EMOJI_ANSWERS.items():
        text = text.replace(emoji, word)
    tokens: list[str] = []
    pieces = _NOT_A_WORD.sub(" ", text.replace("'", "")).split()
    for token in (p for piece in pieces for p in _run_of_codes(piece)):
        coded = _CODED.match(token)
        letters = "" if coded is None else coded[2] or coded[3]
        if coded is None or letters.upper() not in _CODE_SET:
            # "ok1" stays one (not understood): "ok" is no code; so does "1k" (fresh34c:
            # "1K 1C" read K as "ok" and accepted C): a code mistyped is never a yes.
            tokens.append(token)
        elif coded[1]:
            tokens += [coded[1], coded[2]]
        else:
            tokens += [coded[3], coded[4]]
    return tokens


# A coach's own words for OFF and ON (issue #15): "off today", "sick", "OFF please", "I'm
# back on". A reply is read so only when every word is one of these and it holds one
# that says off (or on) and none that says the other; "not", "no" or an answer word
# anywhere makes it something else, so "not sick" or "ok off" are never an OFF.
_OFF_WORDS = frozenset({"off", "sick", "unavailable"})
_ON_WORDS = frozenset({"on", "back", "available"})
_AVAILABILITY_COMPANIONS = frozenset(
    {
        "i",
        "im",
        "am",
        "today",
        "tonight",
        "now",
        "please",
        "pls",
        "plz",
        "call",
        "again",
        "sorry",
        "thanks",
        "thx",
        "feeling",
        "going",
        "for",
        "the",
        "day",
        "shift",
        "all",
    }
)


def _availability(tokens: list[str]) -> Keyword | None:
    """UNAVAILABLE or AVAILABLE when the words are a coach's own OFF or ON, else None."""
    if not tokens or not all(
        t in _OFF_WORDS or t in _ON_WORDS or t in _AVAILABILITY_COMPANIONS for t in tokens
    ):
        return None
    off = any(t in _OFF_WORDS for t in tokens)
    on = any(t in _ON_WORDS for t in tokens)
    if off and not on:
        return Keyword.UNAVAILABLE
    if on and not off and tokens != ["back"]:
        return Keyword.AVAILABLE
    return None


# "off until 6pm", "sick till 18:30", "off til 7 am": OFF words, then the end. Without am /
# pm the time must have minutes ("until 18:00"): "until 6" could be either.
_UNTIL = re.compile(
    r"^(?P<before>.*?)\b(?:until|till|til|untill)\s+(?P<hour>\d{1,2})(?:[:.h](?P<minute>\d{2}))?"
    r"\s*(?P<half>am|pm|a\.m\.?|p\.m\.?)?[\s.!]*$"
)


def _off_until(body: str) -> OffUntil | None:
    """The OFF with an end a reply holds, or None."""
    text = unicodedata.normalize("NFKC", body).translate(_APOSTROPHES).casefold()
    found = _UNTIL.match(text.replace("'", "").strip())
    if found is None or _availability(words(found["before"])) is not Keyword.UNAVAILABLE:
        return None
    hour, minute = int(found["hour"]), int(found["minute"] or 0)
    half = (found["half"] or "")[:1]
    if minute > 59:
        return None
    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "p" else 0)
    elif found["minute"] is None or hour > 23:
        return None
    return OffUntil(hour, minute)


def parse_reply(body: str, *, opted_out: bool = False) -> Reply:
    """What an SMS reply says. `opted_out`: the sender's number is opted out, so a bare
    YES is the carrier's opt-in word rather than an accept."""
    off_until = _off_until(body)
    if off_until is not None:
        return off_until
    tokens = words(body)
    if tokens and all(token in _KEYWORD_COMPANIONS for token in tokens[1:]):
        keyword = _keyword(tokens[0], opted_out)
        if keyword is not None and (len(tokens) == 1 or keyword in _PHRASED_KEYWORDS):
            return keyword
    availability = _availability(tokens)
    if availability is not None:
        return availability
    codes: list[str] = []
    kinds: list[str] = []
    said: list[str] = []  # the answer words and codes, in the order written
    index = 0
    while index < len(tokens):
        for phrase, kind in _PHRASES:
            if tuple(tokens[index : index + len(phrase)]) == phrase:
                kinds.append(kind)
                said.append(kind)
                index += len(phrase)
                break
        else:
            token = tokens[index]
            index += 1
            if token.upper() in _CODE_SET:
                said.append(token.upper())
                if token.upper() not in codes:
                    codes.append(token.upper())
            elif token in _WORDS:
                if _WORDS[token] != _FILLER:
                    kinds.append(_WORDS[token])
                    said.append(_WORDS[token])
            else:
                return NotUnderstood()
    if not kinds:
        return NotUnderstood()
    response = _response(kinds)
    if len(codes) > 1:
        # Each code with its own plain answer first; one answer for all only when nothing
        # negates it (fresh34c: "not B yes C" read the "not" as governing both: "2B, 2C").
        if (paired := _paired(said)) is not None:
            return SeveralCodes(paired)
        if response is None or _NEGATOR in kinds or _BARE_NO in kinds[1:]:
            return NotUnderstood()
        return SeveralCodes(tuple((code, response) for code in codes))
    code = codes[0] if codes else None
    if response is None:
        return Unclear(code)
    # "not H yes H": two answers to one code, one negated; which stands is not ours to
    # guess (fresh34e: it was recorded as a decline).
    named_twice = code is not None and said.count(code) > 1
    if named_twice and _ACCEPT in kinds and {_NEGATOR, _DECLINE, _BARE_NO} & set(kinds):
        return Unclear(code)
    return Answer(response, code)


_PHRASED_KEYWORDS = (Keyword.OPT_OUT, Keyword.HELP)


def _keyword(word: str, opted_out: bool) -> Keyword | None:
    if word in _OPT_OUT:
        return Keyword.OPT_OUT
    if word in _OPT_IN or (opted_out and word == "yes"):
        return Keyword.OPT_IN
    if word == "off":
        return Keyword.UNAVAILABLE
    if word == "on":
        return Keyword.AVAILABLE
    if word in _HELP:
        return Keyword.HELP
    return None


_PLAIN_ANSWERS = {
    _ACCEPT: CoachResponse.ACCEPTED,
    _DECLINE: CoachResponse.DECLINED,
    _BARE_NO: CoachResponse.DECLINED,  # "no R": the no is about R, the code it stands by
}


def _paired(said: list[str]) -> tuple[tuple[str, CoachResponse], ...] | None:
    """Different answers to several codes, each written against its own ("1S 2R", "yes S
    no R", "S1 R2"): the pairs, or None when any answer or code stands alone, a code comes
    twice, or an answer is more than a plain yes or no."""
    answers, codes = said[0::2], said[1::2]
    if said and said[0] not in _PLAIN_ANSWERS:
        codes, answers = answers, codes
    if len(answers) != len(codes) or len(set(codes)) != len(codes):
        return None
    if not all(answer in _PLAIN_ANSWERS for answer in answers):
        return None
    if not all(code in _CODE_SET for code in codes):
        return None
    return tuple(
        (code, _PLAIN_ANSWERS[answer]) for code, answer in zip(codes, answers, strict=True)
    )


def _response(kinds: list[str]) -> CoachResponse | None:
    """Accept only with no negation anywhere; decline when every signal is negative and
    no decline is negated; None (ask) for any other mix."""
    accepts = declines = 0
    for position, kind in enumerate(kinds):
        before = kinds[position - 1] if position > 0 else None
        if kind == _ACCEPT:
            if before == _NEGATOR:
                declines += 1  # "not ok", "can't accept": the negation governs the accept
            elif before == _BARE_NO:
                return None  # "no ok": "no, ok" or "no problem, ok"?
            else:
                accepts += 1
        elif kind == _DECLINE:
            if before in (_NEGATOR, _BARE_NO):
                return None  # "not declining", "don't decline": a no to a no
            declines += 1
        elif kind in (_NEGATOR, _BARE_NO):
            declines += 1
    if accepts and declines:
        return None
    if accepts:
        return CoachResponse.ACCEPTED
    return CoachResponse.DECLINED


@dataclass(frozen=True)
class ReplyReading:
    """What a reply says, read both ways the sender's standing may ask for (`usual`, and
    `if_opted_out`: a bare YES is then the carrier's opt-in word). Enough to act on the
    reply later without its text: what a reply taken during a database outage keeps."""

    usual: Reply
    if_opted_out: Reply

    def for_standing(self, opted_out: bool) -> Reply:
        """The reading for a sender whose number is (or is not) opted out."""
        return self.if_opted_out if opted_out else self.usual

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict of the two readings (no text of the reply)."""
        return {"usual": _reply_json(self.usual), "if_opted_out": _reply_json(self.if_opted_out)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> "ReplyReading":
        """The reading `to_json` wrote; raises ValueError or KeyError for anything else."""
        usual, if_opted_out = data["usual"], data["if_opted_out"]
        if not isinstance(usual, dict) or not isinstance(if_opted_out, dict):
            raise ValueError("a reading is an object")
        return cls(_reply_from_json(usual), _reply_from_json(if_opted_out))


def read_reply(body: str) -> ReplyReading:
    """`parse_reply` both ways; `body` itself is not kept."""
    return ReplyReading(parse_reply(body), parse_reply(body, opted_out=True))


def _reply_json(reply: Reply) -> dict[str, object]:
    if isinstance(reply, Keyword):
        return {"kind": "keyword", "keyword": reply.value}
    if isinstance(reply, Answer):
        return {"kind": "answer", "response": reply.response.value, "code": reply.code}
    if isinstance(reply, Unclear):
        return {"kind": "unclear", "code": reply.code}
    if isinstance(reply, OffUntil):
        return {"kind": "off_until", "hour": reply.hour, "minute": reply.minute}
    if isinstance(reply, SeveralCodes):
        return {"kind": "several", "answers": [[c, r.value] for c, r in reply.answers]}
    return {"kind": "not_understood"}


def _code(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in _CODE_SET:
        raise ValueError("not a reply code")
    return value


def _listed(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError("a list was expected")
    return value


def _reply_from_json(data: dict[str, object]) -> Reply:
    kind = data["kind"]
    if kind == "keyword":
        return Keyword(str(data["keyword"]))
    if kind == "answer":
        return Answer(CoachResponse(str(data["response"])), _code(data.get("code")))
    if kind == "unclear":
        return Unclear(_code(data.get("code")))
    if kind == "not_understood":
        return NotUnderstood()
    if kind == "several":
        if "answers" not in data:  # kept before 2026-12-03: one answer for every code
            data = {"answers": [[c, data["response"]] for c in _listed(data["codes"])]}
        answers = [_listed(pair) for pair in _listed(data["answers"])]
        if len(answers) < 2 or any(len(pair) != 2 for pair in answers):
            raise ValueError("several codes are two or more, each with an answer")
        return SeveralCodes(
            tuple((str(_code(code)), CoachResponse(str(response))) for code, response in answers)
        )
    if kind == "off_until":
        hour, minute = data["hour"], data["minute"]
        if not isinstance(hour, int) or not isinstance(minute, int):
            raise ValueError("an end is whole hours and minutes")
        if not (0 <= hour <= 23 and 0 <= minute <= 59):
            raise ValueError("not a time of day")
        return OffUntil(hour, minute)
    raise ValueError(f"unknown reply kind {kind!r}")
