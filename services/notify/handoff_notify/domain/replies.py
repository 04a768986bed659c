"""SMS replies as coaches type them, read into an answer, a carrier keyword, or nothing.

A reply is normalised (Unicode NFKC, case, curly apostrophes, punctuation, emoji)
and split into words; "1B" and "b1" are split into the answer and the code. Every
word must be one this module knows: an answer word, a code letter, a carrier
keyword or a little filler ("thanks", "I'm"). Anything else makes the reply not
understood, because a reply with an unknown word in it ("ok but busy") cannot be
read safely. A negation never becomes an accept: a reply with both an accept and
a decline in it is a decline when the negation governs the accept ("not ok",
"not on my way", "can't accept") and not understood otherwise ("yes no").

Codes are single letters that are neither answers (Y, N) nor easily misread
(I, L, O look like digits; A, K, U and X are words or sign-offs in a text).
The vocabulary is listed in docs/decisions/0013-reply-codes-and-carrier-keywords.md.
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


Reply = Answer | Keyword | NotUnderstood

_OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit"})
_OPT_IN = frozenset({"start", "unstop"})
_HELP = frozenset({"help", "info"})

_ACCEPT, _DECLINE, _NEGATOR, _FILLER = "accept", "decline", "negator", "filler"

# Longest phrases first; a phrase is words after normalisation (apostrophes dropped).
_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("on", "my", "way"), _ACCEPT),
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
            "yep",
            "yup",
            "ok",
            "okay",
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
        ),
        _DECLINE,
    ),
    # A negator on its own is a decline too; before an accept it turns it into one.
    **dict.fromkeys(("no", "not", "cant", "cannot", "dont", "wont", "never"), _NEGATOR),
    **dict.fromkeys(
        (
            "i",
            "im",
            "ill",
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
        ),
        _FILLER,
    ),
}
# 👍 and 👎 (any skin tone) are answers; every other emoji and symbol is dropped.
_EMOJI_ANSWERS = {"\U0001f44d": " thumbsup ", "\U0001f44e": " thumbsdown "}
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2018\u2019\u02bc\u2032\u0060\u00b4", "'"))
_NOT_A_WORD = re.compile(r"[^0-9a-z]+")
_CODED = re.compile(r"^(?:([12])([a-z])|([a-z])([12]))$")


def words(body: str) -> list[str]:
    """The reply's words after normalisation: NFKC, case-folded, curly apostrophes made
    straight then dropped ("can\u2019t" → "cant"), punctuation and emoji removed, "1B" and
    "b1" split in two."""
    text = unicodedata.normalize("NFKC", body).translate(_APOSTROPHES).casefold()
    for emoji, word in _EMOJI_ANSWERS.items():
        text = text.replace(emoji, word)
    tokens: list[str] = []
    for token in _NOT_A_WORD.sub(" ", text.replace("'", "")).split():
        coded = _CODED.match(token)
        if coded is None:
            tokens.append(token)
        elif coded[1]:
            tokens += [coded[1], coded[2]]
        else:
            tokens += [coded[3], coded[4]]
    return tokens


def parse_reply(body: str, *, opted_out: bool = False) -> Reply:
    """What an SMS reply says. `opted_out`: the sender's number is opted out, so a bare
    YES is the carrier's opt-in word rather than an accept."""
    tokens = words(body)
    if len(tokens) == 1:
        keyword = _keyword(tokens[0], opted_out)
        if keyword is not None:
            return keyword
    codes: set[str] = set()
    kinds: list[str] = []
    index = 0
    while index < len(tokens):
        for phrase, kind in _PHRASES:
            if tuple(tokens[index : index + len(phrase)]) == phrase:
                kinds.append(kind)
                index += len(phrase)
                break
        else:
            token = tokens[index]
            index += 1
            if len(token) == 1 and token.upper() in CODE_LETTERS:
                codes.add(token.upper())
            elif token in _WORDS:
                if _WORDS[token] != _FILLER:
                    kinds.append(_WORDS[token])
            else:
                return NotUnderstood()
    if len(codes) > 1:
        return NotUnderstood()
    response = _response(kinds)
    if response is None:
        return NotUnderstood()
    return Answer(response, codes.pop() if codes else None)


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


def _response(kinds: list[str]) -> CoachResponse | None:
    """Accept only with no negation anywhere; decline when every accept is negated."""
    accepts = negated = 0
    declines = 0
    for position, kind in enumerate(kinds):
        if kind == _ACCEPT:
            if position > 0 and kinds[position - 1] == _NEGATOR:
                negated += 1
            else:
                accepts += 1
        elif kind in (_DECLINE, _NEGATOR):
            declines += 1
    if accepts and not declines and not negated:
        return CoachResponse.ACCEPTED
    if (declines or negated) and not accepts:
        return CoachResponse.DECLINED
    return None
