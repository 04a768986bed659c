"""One-digit SMS replies, as a coach types them on a lock screen."""

from handoff_schemas.vocabulary import CoachResponse

_CODES = {
    "1": CoachResponse.ACCEPTED,
    "YES": CoachResponse.ACCEPTED,
    "Y": CoachResponse.ACCEPTED,
    "2": CoachResponse.DECLINED,
    "NO": CoachResponse.DECLINED,
    "N": CoachResponse.DECLINED,
}


def parse_reply(body: str) -> CoachResponse | None:
    """The answer a reply gives, or None: anything else is not read as an answer."""
    return _CODES.get(body.strip().strip(".!").upper())
