"""The referral an ED posts: validated strictly, fingerprinted for idempotent replays."""

import hashlib
import json
import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from handoff_schemas.vocabulary import (
    CancelReason,
    Consent,
    E164Phone,
    GenderPreference,
    LanguageTag,
    Substance,
    Urgency,
)


def storable_text(value: str) -> bool:
    """Whether PostgreSQL can store the text: no NUL character, no lone UTF-16 surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _storable_text(value: str) -> str:
    if not storable_text(value):
        raise ValueError("the NUL character and lone surrogates are not allowed")
    return value


ExternalId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"),
]
MAX_LOCATION_CHARS = 40
"""What Handoff keeps of where the patient is: enough for `ED 12 B`, short enough for a text."""


def fit_location(text: str) -> tuple[str, bool]:
    """`text` with whitespace stripped and cut to MAX_LOCATION_CHARS, and whether it was cut.
    A consult is worth more than the end of an over-long bed name: HL7 and FHIR cut rather
    than refuse (the REST API, whose caller can fix it, still refuses)."""
    stripped = text.strip()
    if len(stripped) <= MAX_LOCATION_CHARS:
        return stripped, False
    return stripped[:MAX_LOCATION_CHARS].rstrip(), True


def shown_as_sent(value: str) -> str:
    """`value`, or ValueError for control and format characters (Unicode categories C*, and
    line or paragraph separators): a right-to-left override or a zero-width space would make
    the coach's page show another bed than the one sent (fresh33b)."""
    if any(
        unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") for c in value
    ):
        raise ValueError(
            "control and format characters (such as a direction override) are not allowed"
        )
    return value


def _not_blank(value: str) -> str:
    """`value`, or ValueError when it is only spaces (fresh34b: it was refused with the
    pattern of control characters, which misled)."""
    if not value.strip():
        raise ValueError("a location is needed: it is empty or only spaces")
    return value


Location = Annotated[
    str,
    AfterValidator(_not_blank),
    AfterValidator(_storable_text),
    AfterValidator(shown_as_sent),
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=MAX_LOCATION_CHARS,
    ),
]
Initials = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{1,3}$")]
AgeBand = Literal["under_18", "18-25", "26-35", "36-45", "46-55", "56-65", "over_65"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Patient(Strict):
    preferred_language: LanguageTag = Field(examples=["en", "es-US"])
    interpreter_needed: StrictBool  # true or false: "yes", "false" and 0 are a 422
    coach_gender_preference: GenderPreference | None = None
    substances: frozenset[Substance] = Field(min_length=1, max_length=5)
    consent: Consent
    initials: Initials | None = None
    age_band: AgeBand | None = None


class ReferralRequest(Strict):
    external_id: ExternalId = Field(description="The hospital's own id; idempotency key per site.")
    urgency: Urgency
    location: Location = Field(description="ED unit or bed, e.g. 'ED bay 4'.")
    callback_phone: E164Phone = Field(description="The ED's number for the coach, E.164.")
    patient: Patient
    notes: Annotated[str, StringConstraints(max_length=1000), AfterValidator(_storable_text)] | (
        None
    ) = Field(
        default=None,
        description="The hospital's own free text, returned by GET. Never shown to the coach "
        "nor put in any event (it may hold names or history): what the coach must know goes "
        "in the structured fields.",
    )

    def fingerprint(self) -> bytes:
        """Equal for the same request sent twice, whatever the order of keys or substances."""
        canonical = self.model_dump(mode="json")
        canonical["patient"]["substances"] = sorted(canonical["patient"]["substances"])
        encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).digest()


class CancelRequest(Strict):
    reason: CancelReason
