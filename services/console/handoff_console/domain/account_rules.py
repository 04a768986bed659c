"""What a console account may be: its username (case-insensitive), the states and sites of
its scope. Pure: no I/O.

A state is checked against `handoff_schemas.vocabulary.US_STATES`, the one list every
service uses.
"""

import re

from handoff_schemas.vocabulary import US_STATES

# The referral service's own rule for a site id (its admin API's path pattern).
_SITE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")
# Printable, no spaces: what a person types on a sign-in form, and one token on a CLI line.
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")


class InvalidAccount(ValueError):
    """An option of an account is not acceptable; `option` names it (e.g. `--state`)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def username_key(username: str) -> str:
    """The stored form of a username: trimmed and lower-cased, so `Dana` and `dana` are one
    account. Raises InvalidAccount (`--username`) for anything but 1 to 64 of a-z, 0-9 and
    `. _ @ -`, starting with a letter or digit."""
    key = username.strip().lower()
    if not _USERNAME.fullmatch(key):
        raise InvalidAccount(
            "--username", "1-64 letters, digits or . _ @ -, starting with a letter or digit"
        )
    return key


def state_codes(states: list[str]) -> list[str]:
    """Upper-cased, deduplicated, sorted USPS codes; raises InvalidAccount (`--state`) naming
    the first that is not a US state, DC or territory."""
    codes = sorted({s.strip().upper() for s in states})
    for code in codes:
        if code not in US_STATES:
            raise InvalidAccount("--state", f"{code!r} is not a US state or territory code")
    return codes


def site_ids(sites: list[str]) -> list[str]:
    """Deduplicated, sorted site ids in the referral service's form (lower case, digits and
    hyphens, 2 to 40 characters); raises InvalidAccount (`--site`) naming the first that is not."""
    ids = sorted({s.strip() for s in sites})
    for site in ids:
        if not _SITE_ID.fullmatch(site):
            raise InvalidAccount("--site", f"{site!r} is not a site id (such as md-mercy)")
    return ids
