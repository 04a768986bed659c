"""HL7 v2 messages from a hospital's integration engine, read into what the referral service
does with them; and the ACK that answers each one. Pure: no I/O.

What a message becomes (the README's mapping table says the same):

- `ORM^O01` / `OMG^O19` with ORC-1 `NW` and an OBR-4 order code the interface registered for
  "peer recovery coach consult" → `NewOrder` (a ReferralRequest, as the REST API takes it);
- ORC-1 `CA` → `OrderCancelled` (by ORC-2, the placer order number);
- `ADT^A11` → `VisitCancelled`, `ADT^A03` → `Discharged`, `ADT^A08` → `LocationChanged`,
  each naming the visit by a hash of PV1-19 (or PID-18): the visit number is not kept;
- anything else → `NotHandled`.

A message that cannot be read raises `MessageError` naming the field as an HL7 ERR-2
location (`PID^1^3`) with an HL7 table 0357 error code. PID gives only what the referral
already holds: initials (PID-5) and an age band from the date of birth (PID-7) at the visit
date (PV1-44, else MSH-7). Name, MRN and DOB go no further than this module, and no error
message repeats a value from the message.
"""

import codecs
import contextlib
import hashlib
import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Generic, TypeVar

import hl7
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from handoff_referral.domain.intake import (
    AgeBand,
    Patient,
    ReferralRequest,
    fit_location,
    shown_as_sent,
)
from handoff_schemas.vocabulary import (
    CancelReason,
    Consent,
    E164Phone,
    GenderPreference,
    LanguageTag,
    SiteId,
    Substance,
    Urgency,
)

T = TypeVar("T")

ACK_APPLICATION = "HANDOFF"
_MAX_REPETITIONS = 20
_READ_SEGMENTS = frozenset({"MSH", "PID", "PV1", "ORC", "OBR", "OBX", "TQ1"})
_DTM = re.compile(
    r"^(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?:\.\d{1,4})?(?P<offset>[+-]\d{4})?$"
)
# HL7 table 0296 allows ISO 639 codes; engines commonly send the three-letter ones.
_ISO_639_2 = {
    "eng": "en", "spa": "es", "fre": "fr", "fra": "fr", "ger": "de", "deu": "de",
    "por": "pt", "ita": "it", "chi": "zh", "zho": "zh", "vie": "vi", "kor": "ko",
    "rus": "ru", "ara": "ar", "hat": "ht", "tgl": "tl", "pol": "pl", "jpn": "ja",
}  # fmt: skip
# HL7 table 0027 priority → urgency: stat is emergent, ASAP and timing critical urgent.
_PRIORITIES = {
    "S": Urgency.EMERGENT,
    "A": Urgency.URGENT,
    "T": Urgency.URGENT,
    # Spelled out, as engines often send them (fresh34b: STAT became routine).
    "STAT": Urgency.EMERGENT,
    "ASAP": Urgency.URGENT,
}


class ErrorCode(StrEnum):
    """HL7 table 0357, message error condition codes (the ones this receiver uses)."""

    ACCEPTED = "0"
    SEGMENT_SEQUENCE_ERROR = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE_ERROR = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    UNSUPPORTED_VERSION = "203"
    UNKNOWN_KEY = "204"
    DUPLICATE_KEY = "205"
    INTERNAL_ERROR = "207"


_ERROR_TEXT = {
    ErrorCode.ACCEPTED: "Message accepted",
    ErrorCode.SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE_ERROR: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_VERSION: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.INTERNAL_ERROR: "Application internal error",
}


class AckCode(StrEnum):
    ACCEPTED = "AA"
    ERROR = "AE"  # the content is wrong: do not resend it unchanged
    REJECTED = "AR"  # not now, or not from you: the engine may retry


class Severity(StrEnum):
    """HL7 table 0516, ERR-4: how bad an ERR segment is."""

    ERROR = "E"
    WARNING = "W"  # accepted (AA), but the sender should look at it


class MessageError(Exception):
    """A message that cannot be taken as sent. `location` is an ERR-2 location
    (`segment^sequence^field[^repetition^component]`), `text` names the field and never
    repeats its value; `severity` is ERR-4 and `application_code` (ERR-5, empty for none)
    a short code of Handoff's own for what happened."""

    def __init__(
        self,
        location: str,
        code: ErrorCode,
        text: str,
        severity: Severity = Severity.ERROR,
        application_code: str = "",
        header: hl7.Message | None = None,
    ) -> None:
        super().__init__(f"{location}: {text}")
        self.location = location
        self.code = code
        self.text = text
        self.severity = severity
        self.application_code = application_code
        self.header = header  # raised before the message was parsed: its MSH, for the ACK


UNKNOWN_ORDER = MessageError(
    "ORC^1^2",
    ErrorCode.UNKNOWN_KEY,
    "no referral has this ORC-2 placer order number: nothing was cancelled",
    Severity.WARNING,
    "unknown_order",
)
"""The warning on the AA to an order cancel (ORC-1 CA) Handoff never had the order of."""

UNKNOWN_VISIT = MessageError(
    "PV1^1^19",
    ErrorCode.UNKNOWN_KEY,
    "no referral was ordered for this PV1-19 visit: nothing was changed",
    Severity.WARNING,
    "unknown_visit",
)
"""The warning on the AA to an A03, A08 or A11 about a visit no referral was ordered for."""

OLDER_MOVE = MessageError(
    "MSH^1^7",
    ErrorCode.ACCEPTED,
    "an A08 sent (MSH-7) before the one that last moved this visit: nothing was changed",
    Severity.WARNING,
    "older_move",
)
"""The warning on the AA to an A08 older than the move already applied (fresh34a: an A08
resent late moved the coach back to the bed the patient had left)."""


class SeveralMessages(MessageError):
    """A frame holding more than one message (a second MSH, or an HL7 batch): refused whole,
    with an AE, rather than answering the first and losing the rest. `header` is the MSH of
    the first message with a control id, for the ACK to echo (None when none can be read):
    a message cut short before its MSH-10, then a stray start block, leaves the engine
    waiting on the next one's ACK."""


class Question(BaseModel, Generic[T]):
    """One order-entry question sent as an OBX: its OBX-3 code, and answer codes (OBX-5)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=1, max_length=64)
    answers: dict[str, T] = Field(min_length=1)


class Questions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    consent: Question[Consent]
    substances: Question[Substance]
    interpreter: Question[bool] | None = None
    coach_preference: Question[GenderPreference | None] | None = None


class Interface(BaseModel):
    """A site's interface registration: which sender it is (MSH-3 and MSH-4), the order code
    of the consult, the order-entry questions, and the ED's callback number (E.164)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: SiteId
    sending_application: str = Field(min_length=1, max_length=180)
    sending_facility: str = Field(min_length=1, max_length=180)
    order_codes: frozenset[str] = Field(min_length=1)
    callback_phone: E164Phone
    questions: Questions
    default_language: LanguageTag = "en"
    default_urgency: Urgency = Urgency.URGENT


@dataclass(frozen=True)
class Header:
    """What MSH says about a message: who sent it, its control id, its type."""

    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str  # e.g. "ORM^O01"; "ACK" when there is no trigger event
    version: str


@dataclass(frozen=True)
class NewOrder:
    request: ReferralRequest
    visit_key: bytes | None
    location_cut: bool = False  # PV1-3 was over MAX_LOCATION_CHARS and was cut
    sent_at: datetime | None = None  # MSH-7, UTC


@dataclass(frozen=True)
class OrderCancelled:
    placer_number: str


@dataclass(frozen=True)
class VisitCancelled:
    visit_key: bytes


@dataclass(frozen=True)
class Discharged:
    visit_key: bytes


@dataclass(frozen=True)
class LocationChanged:
    """An A08's move: `sent_at` is its MSH-7 (UTC), so that an older one arriving later
    changes nothing."""

    visit_key: bytes
    location: str
    location_cut: bool  # PV1-3 was over MAX_LOCATION_CHARS and was cut
    sent_at: datetime


@dataclass(frozen=True)
class NotHandled:
    """A message type, or an order control, Handoff has nothing to do with."""


Intent = NewOrder | OrderCancelled | VisitCancelled | Discharged | LocationChanged | NotHandled

CANCEL_REASONS = {
    OrderCancelled: CancelReason.NO_LONGER_NEEDED,
    VisitCancelled: CancelReason.ENTERED_IN_ERROR,
    Discharged: CancelReason.PATIENT_LEFT,
}
"""Why the referral is cancelled, by what cancelled it."""


def parse(raw: bytes) -> hl7.Message:
    """The message's MSH, PID, PV1, ORC, OBR, OBX and TQ1 segments, whatever its line
    endings (`\\r`, `\\n`, `\\r\\n`: python-hl7 splits on `\\r` only). Text is UTF-8;
    bytes that are not are read as Latin-1, which engines still send. A UTF-8 byte order
    mark before MSH (Windows engines write one) is dropped. Raises MessageError if there is
    no MSH segment to answer."""
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Windows-1252 first: its 0x80-0x9F are letters and quotes (O\x92Brien), which
        # Latin-1 would read as control characters.
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    lines = text.split("\r")
    # A second MSH anywhere, even behind a stray start block (an engine that left out the end
    # block between two messages, or cut one short and started again mid-line) or with other
    # separators, is a second message.
    pieces = [piece.lstrip(_STRAY) for line in lines for piece in line.split(_START_BLOCK)]
    headers = [piece for piece in pieces if _MSH.match(piece)]
    batch = text[:3] in ("FHS", "BHS")
    cut = _START_BLOCK in text
    if len(headers) > 1 or batch or cut:
        what = (
            "an HL7 batch"
            if batch
            else f"{len(headers)} messages"
            if len(headers) > 1
            else "a start block inside the message (one cut short?)"
        )
        raise SeveralMessages(
            "MSH^2" if not batch else text[:3],
            ErrorCode.DATA_TYPE_ERROR,
            f"{what} in one MLLP frame: send one message per frame, as MLLP requires; none "
            "of them was taken",
            header=_awaited_header(text.split(_START_BLOCK)),
        )
    if not text.startswith("MSH") or len(text) < 8:
        raise MessageError("MSH^1", ErrorCode.REQUIRED_FIELD_MISSING, "no MSH segment")
    # Only the segments Handoff reads are parsed: next of kin, guarantor, insurance,
    # diagnoses and Z-segments are PHI or noise Handoff has no use for, and parsing is
    # most of a message's CPU.
    read = [line for line in lines if line[:3] in _READ_SEGMENTS]
    if (where := _control_character(read, separator=text[3])) is not None:
        raise MessageError(
            where,
            ErrorCode.DATA_TYPE_ERROR,
            f"{_field_name(where)} holds a control character, which HL7 v2 text may not "
            "(send it escaped, or leave it out); nothing was taken",
            header=_header_only(lines[0]),
        )
    kept = "\r".join(read)
    try:
        return hl7.parse(kept)
    # python-hl7 asserts its separators are distinct: MSH-2 `^^\\&` must be an AE, not a crash.
    except (ValueError, IndexError, KeyError, AssertionError):
        raise MessageError("MSH^1", ErrorCode.DATA_TYPE_ERROR, "MSH is malformed") from None


_MSH = re.compile(r"^MSH[^A-Za-z0-9]")
_START_BLOCK = "\x0b"
_STRAY = " \t"  # blanks before a segment
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C0 but TAB, DEL and C1


def _control_character(segments: list[str], separator: str) -> str | None:
    """The ERR-2 location (`segment^sequence^field`) of the first control character (C0 but
    tab, DEL, C1) in `segments`: HL7 v2.5.1 section 2.7 allows none in a field's text, where a
    NUL cannot be stored and another would reach a coach's page; None without one."""
    seen: dict[str, int] = {}
    for segment in segments:
        name = segment[:3]
        seen[name] = seen.get(name, 0) + 1
        found = _CONTROL.search(segment)
        if found is not None:
            fields_before = segment[: found.start()].count(separator)
            field = fields_before + 1 if name == "MSH" else fields_before  # MSH-1 is the "|"
            return f"{name}^{seen[name]}^{field}"
    return None


def _awaited_header(parts: list[str]) -> hl7.Message | None:
    """The MSH whose ACK the engine waits on, of a frame's `parts` (split at start blocks):
    the first with a control id and a segment after it; one cut short before its next
    segment (fresh34d: its MSH-10 could be a fragment) only when there is no other."""
    whole: list[hl7.Message] = []
    cut_short: list[hl7.Message] = []
    for part in parts:
        segments = [line.lstrip(_STRAY) for line in part.split("\r") if line.strip(_STRAY)]
        for position, segment in enumerate(segments):
            header = _header_only(segment) if _MSH.match(segment) else None
            if header is None or not _control_id(header):
                continue
            followed = position + 1 < len(segments) and not _MSH.match(segments[position + 1])
            (whole if followed else cut_short).append(header)
    if not whole and not cut_short:
        # A start block inside MSH itself (fresh34e): the header read as if it were not.
        joined = "".join(parts).lstrip(_STRAY)
        header = _header_only(joined.split("\r")[0]) if _MSH.match(joined) else None
        return header if header is not None and _control_id(header) else None
    return (whole or cut_short)[0]


def _control_id(header: hl7.Message) -> str:
    return _value(header.segment("MSH"), 10)


def _header_only(msh: str) -> hl7.Message | None:
    """One MSH segment as a message, for an ACK to echo; None if it cannot be parsed."""
    try:
        return hl7.parse(msh)
    except (ValueError, IndexError, KeyError, AssertionError):
        return None


def read_header(message: hl7.Message) -> Header:
    """MSH-3, MSH-4, MSH-10, MSH-9 and MSH-12, as sent (empty when absent). Does not raise:
    the sender is found first, so that `check_header`'s refusal is counted under its site."""
    msh = message.segment("MSH")
    kind, trigger = _value(msh, 9), _value(msh, 9, component=2)
    return Header(
        sending_application=_value(msh, 3),
        sending_facility=_value(msh, 4),
        control_id=_value(msh, 10),
        message_type=f"{kind}^{trigger}" if trigger else kind,
        version=_value(msh, 12),
    )


MAX_CONTROL_ID = 199
"""MSH-10's length in HL7 v2.7 (ST, 199); earlier versions allow 20, which engines exceed."""
_V2_VERSION = re.compile(r"^2\.[1-9](\.[0-9])?$")
"""An MSH-12 version id of an HL7 v2 release (table 0104: 2.1 to 2.9, 2.3.1, 2.5.1 ...)."""


def check_header(header: Header) -> None:
    """Raises MessageError for an empty or over-long MSH-10 control id, an empty MSH-9
    message type, or an MSH-12 version id that is no HL7 v2 release (table 0104; an empty
    one is read as sent): nothing can be done with such a message, and resending
    it unchanged would not help."""
    if not header.control_id:
        raise MessageError("MSH^1^10", ErrorCode.REQUIRED_FIELD_MISSING, "MSH-10 control id")
    if len(header.control_id) > MAX_CONTROL_ID:
        text = f"MSH-10 control id is over {MAX_CONTROL_ID} characters"
        raise MessageError("MSH^1^10", ErrorCode.DATA_TYPE_ERROR, text)
    if not header.message_type:
        raise MessageError("MSH^1^9", ErrorCode.REQUIRED_FIELD_MISSING, "MSH-9 message type")
    if header.version and not _V2_VERSION.match(header.version):
        text = "MSH-12 version id is not an HL7 v2 release"
        raise MessageError("MSH^1^12", ErrorCode.UNSUPPORTED_VERSION, text)


def read_message(message: hl7.Message, header: Header, interface: Interface) -> Intent:
    """What the message asks of Handoff, for a sender registered as `interface`.
    Raises MessageError naming the first field that cannot be read."""
    sent = _value(message.segment("MSH"), 7)
    if not sent:
        raise MessageError("MSH^1^7", ErrorCode.REQUIRED_FIELD_MISSING, "MSH-7 message time")
    sent_at = parse_timestamp(sent, "MSH^1^7")  # a time that cannot be read is an AE
    _once_each(message)
    if header.message_type in ("ORM^O01", "OMG^O19"):
        order = _read_order(message, interface, _written_date(sent))
        return replace(order, sent_at=sent_at) if isinstance(order, NewOrder) else order
    if header.message_type in ("ADT^A11", "ADT^A03", "ADT^A08"):
        visit_key = _visit_key(message, interface.site_id, required=True)
        assert visit_key is not None
        if header.message_type == "ADT^A11":
            return VisitCancelled(visit_key)
        if header.message_type == "ADT^A03":
            return Discharged(visit_key)
        return LocationChanged(visit_key, *fit_location(_location(message)), sent_at=sent_at)
    return NotHandled()


_ONCE = {
    "PID": "one patient per message",
    "PV1": "one visit per message",
    "ORC": "one order per message: send each order in a message of its own",
    "OBR": "one order per message: send each order in a message of its own",
}


def _once_each(message: hl7.Message) -> None:
    """Refuse a second PID, PV1, ORC or OBR: Handoff reads one of each, and taking the
    first alone would drop the rest of the message while answering AA (an ORM may carry
    several orders, HL7 v2.5.1 section 4.4.1; each must be its own referral)."""
    for name, why in _ONCE.items():
        try:
            count = len(message.segments(name))
        except KeyError:
            continue
        if count > 1:
            raise MessageError(
                f"{name}^2", ErrorCode.SEGMENT_SEQUENCE_ERROR, f"a second {name} segment: {why}"
            )


def _read_order(message: hl7.Message, interface: Interface, sent_on: date) -> Intent:
    orc = _segment(message, "ORC")
    control = _value(orc, 1)
    if control == "CA":
        return OrderCancelled(_placer_number(orc))
    if control != "NW":
        return NotHandled()
    obr = _segment(message, "OBR")
    order_code = _value(obr, 4)
    if not order_code:
        raise MessageError("OBR^1^4", ErrorCode.REQUIRED_FIELD_MISSING, "OBR-4 order code")
    if order_code not in interface.order_codes:
        raise MessageError(
            "OBR^1^4",
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            "OBR-4 order code is not this site's peer recovery coach consult",
        )
    pid = _segment(message, "PID")
    if not _value(pid, 3):
        raise MessageError("PID^1^3", ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 patient id")
    visit_date = _visit_date(message, sent_on)
    patient = _patient(message, pid, interface, visit_date)
    external_id = _placer_number(orc)
    location, location_cut = fit_location(_location(message))
    try:
        request = ReferralRequest(
            external_id=external_id,
            urgency=_urgency(orc, obr, message, interface),
            location=location,
            callback_phone=interface.callback_phone,
            patient=patient,
        )
    except ValidationError as error:
        if error.errors()[0]["loc"][0] == "location":
            location_error = "PV1-3 location is not usable"
            raise MessageError("PV1^1^3", ErrorCode.DATA_TYPE_ERROR, location_error) from None
        raise MessageError(
            "ORC^1^2", ErrorCode.DATA_TYPE_ERROR, "ORC-2 placer order number is not usable"
        ) from None
    return NewOrder(request, _visit_key(message, interface.site_id, required=False), location_cut)


def _patient(
    message: hl7.Message, pid: hl7.Segment, interface: Interface, visit_date: date
) -> Patient:
    questions = interface.questions
    answers = _answers(message)
    consent: Consent | None = _answer_one(answers, questions.consent, "consent")
    substances = _answer_many(answers, questions.substances, "substances")
    language = _language(pid, interface)
    interpreter = (
        _answer_one(answers, questions.interpreter, "interpreter")
        if questions.interpreter and questions.interpreter.code in answers
        else not language.lower().startswith("en")
    )
    preference = (
        _answer_one(answers, questions.coach_preference, "coach preference")
        if questions.coach_preference and questions.coach_preference.code in answers
        else None
    )
    try:
        return Patient(
            preferred_language=language,
            interpreter_needed=bool(interpreter),
            coach_gender_preference=preference,
            substances=frozenset(substances),
            consent=consent,
            initials=_initials(pid),
            age_band=_age_band(pid, visit_date),
        )
    except ValidationError as error:
        field = str(error.errors()[0]["loc"][0])
        location = {"preferred_language": "PID^1^15", "substances": "OBX"}.get(field, "OBX")
        raise MessageError(location, ErrorCode.DATA_TYPE_ERROR, f"{field} is not usable") from None


def _answers(message: hl7.Message) -> dict[str, tuple[int, list[str]]]:
    """OBX-3 question code → (the OBX's position, its OBX-5 answer codes, one per repetition)."""
    try:
        segments = message.segments("OBX")
    except KeyError:
        return {}
    answers: dict[str, tuple[int, list[str]]] = {}
    for position, obx in enumerate(segments, start=1):
        question = _value(obx, 3)
        if question in answers:  # which answer stands would be a guess: opioids lost to alcohol
            raise MessageError(
                f"OBX^{position}^3",
                ErrorCode.DUPLICATE_KEY,
                "OBX-3 asks a question an earlier OBX answered: one OBX per question "
                "(repeat OBX-5 for several answers)",
            )
        answers[question] = (position, _repetitions(obx, 5))
    return answers


def _answer_one(
    answers: dict[str, tuple[int, list[str]]], question: Question[T], name: str
) -> T | None:
    if question.code not in answers:
        raise MessageError("OBX", ErrorCode.REQUIRED_FIELD_MISSING, f"OBX for the {name} question")
    position, codes = answers[question.code]
    if len(codes) != 1 or codes[0] not in question.answers:
        raise MessageError(
            f"OBX^{position}^5",
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            f"OBX-5 is not a known answer to the {name} question",
        )
    return question.answers[codes[0]]


def _answer_many(
    answers: dict[str, tuple[int, list[str]]], question: Question[T], name: str
) -> list[T]:
    if question.code not in answers:
        raise MessageError("OBX", ErrorCode.REQUIRED_FIELD_MISSING, f"OBX for the {name} question")
    position, codes = answers[question.code]
    unknown = [code for code in codes if code not in question.answers]
    if not codes or unknown:
        raise MessageError(
            f"OBX^{position}^5",
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            f"OBX-5 is not a known answer to the {name} question",
        )
    return [question.answers[code] for code in codes]


def _language(pid: hl7.Segment, interface: Interface) -> str:
    code = _value(pid, 15).lower()
    if not code:
        return interface.default_language
    return _ISO_639_2.get(code, code)


def _urgency(
    orc: hl7.Segment, obr: hl7.Segment, message: hl7.Message, interface: Interface
) -> Urgency:
    """v2.3/2.4: priority is component 6 of ORC-7 (or OBR-27) quantity/timing; v2.5+: TQ1-9."""
    priority = _value(orc, 7, component=6) or _value(obr, 27, component=6)
    if not priority:
        try:
            priority = _value(message.segment("TQ1"), 9)
        except KeyError:
            priority = ""
    if not priority:
        return interface.default_urgency
    return _PRIORITIES.get(priority.upper(), Urgency.ROUTINE)


def _location(message: hl7.Message) -> str:
    """PV1-3 point of care, room and bed: `ED^12^B` → `ED 12 B`, uncut (see `fit_location`)."""
    pv1 = _segment(message, "PV1")
    parts = [_value(pv1, 3, component=c) for c in (1, 2, 3)]
    location = " ".join(p for p in parts if p)
    if not location:
        raise MessageError("PV1^1^3", ErrorCode.REQUIRED_FIELD_MISSING, "PV1-3 location")
    try:
        return shown_as_sent(location)
    except ValueError as error:  # as REST and FHIR refuse it, an A08 too (fresh34b)
        raise MessageError(
            "PV1^1^3", ErrorCode.DATA_TYPE_ERROR, f"PV1-3 location: {error}"
        ) from None


def _visit_key(message: hl7.Message, site_id: str, required: bool) -> bytes | None:
    """A hash of the visit number (PV1-19, else PID-18 account number) with the site: enough
    to find the visit's referrals again, without keeping the number."""
    visit = ""
    with contextlib.suppress(KeyError):
        visit = _value(message.segment("PV1"), 19)
    if not visit:
        with contextlib.suppress(KeyError):
            visit = _value(message.segment("PID"), 18)
    if not visit:
        if required:
            raise MessageError("PV1^1^19", ErrorCode.REQUIRED_FIELD_MISSING, "PV1-19 visit number")
        return None
    return visit_key(site_id, visit)


def visit_key(site_id: str, visit_number: str) -> bytes:
    """The stored key of a site's visit: SHA-256 of `site_id:visit_number`."""
    return hashlib.sha256(f"{site_id}:{visit_number}".encode()).digest()


def _visit_date(message: hl7.Message, sent_on: date) -> date:
    """The visit's date, for the age band: PV1-44 admit time, else the message's date."""
    admitted = ""
    with contextlib.suppress(KeyError):
        admitted = _value(message.segment("PV1"), 44)
    if admitted:
        parse_timestamp(admitted, "PV1^1^44")  # a time that cannot be read is an AE
        return _written_date(admitted)
    return sent_on


def _written_date(value: str) -> date:
    """The calendar date of an HL7 DTM as written, in the sender's own offset (the ED's
    local date, which a patient's age turns on), not in UTC: 20261202230000-0500 is
    2 December, though 3 December in UTC. `value` was read by `parse_timestamp` first."""
    match = _DTM.match(value)
    assert match is not None
    return date(int(match["year"]), int(match["month"] or 1), int(match["day"] or 1))


def parse_timestamp(value: str, location: str) -> datetime:
    """An HL7 DTM (`YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`) as a UTC datetime; a time without
    an offset is taken as UTC. Raises MessageError naming `location`."""
    match = _DTM.match(value)
    try:
        if match is None:
            raise ValueError(value)
        parts = {k: int(v) for k, v in match.groupdict().items() if v and k != "offset"}
        offset = match["offset"]
        zone = UTC
        if offset:
            sign = -1 if offset[0] == "-" else 1
            zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        moment = datetime(
            parts["year"],
            parts.get("month", 1),
            parts.get("day", 1),
            parts.get("hour", 0),
            parts.get("minute", 0),
            parts.get("second", 0),
            tzinfo=zone,
        ).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: 00010101+1400 is in year 0 in UTC
        raise MessageError(
            location, ErrorCode.DATA_TYPE_ERROR, f"{_field_name(location)} is not an HL7 time"
        ) from None
    return moment


def _initials(pid: hl7.Segment) -> str | None:
    """Given then family name initial from PID-5 (XPN: family^given), letters A-Z only:
    an accented initial is folded (É → E); a name in another script gives none."""
    family, given = _value(pid, 5), _value(pid, 5, component=2)
    letters = ""
    for name in (given, family):
        if name:
            folded = unicodedata.normalize("NFKD", name[0]).encode("ascii", "ignore").decode()
            if not (folded.isascii() and folded.isalpha()):
                return None
            letters += folded.upper()
    return letters or None


def _age_band(pid: hl7.Segment, visit_date: date) -> AgeBand | None:
    value = _value(pid, 7)
    if not value:
        return None
    born = parse_timestamp(value, "PID^1^7").date()
    if born > visit_date:
        raise MessageError("PID^1^7", ErrorCode.DATA_TYPE_ERROR, "PID-7 is after the visit")
    birthday_to_come = (visit_date.month, visit_date.day) < (born.month, born.day)
    age = visit_date.year - born.year - birthday_to_come
    bands: list[tuple[int, AgeBand]] = [
        (17, "under_18"),
        (25, "18-25"),
        (35, "26-35"),
        (45, "36-45"),
        (55, "46-55"),
        (65, "56-65"),
    ]
    return next((band for upper, band in bands if age <= upper), "over_65")


def _placer_number(orc: hl7.Segment) -> str:
    placer = _value(orc, 2)
    if not placer:
        raise MessageError("ORC^1^2", ErrorCode.REQUIRED_FIELD_MISSING, "ORC-2 placer order number")
    return placer


def _segment(message: hl7.Message, name: str) -> hl7.Segment:
    try:
        return message.segment(name)
    except KeyError:
        raise MessageError(name, ErrorCode.REQUIRED_FIELD_MISSING, f"{name} segment") from None


def _value(segment: hl7.Segment, field: int, component: int = 1, repetition: int = 1) -> str:
    """One component of one repetition of a field, unescaped; '' when absent."""
    try:
        return str(segment.extract_field(1, field, repetition, component, 1)).strip()
    except IndexError:
        return ""


def _repetitions(segment: hl7.Segment, field: int) -> list[str]:
    """The first component of each repetition of a field, empty ones dropped."""
    values = []
    for repetition in range(1, _MAX_REPETITIONS + 1):
        try:
            value = str(segment.extract_field(1, field, repetition, 1, 1)).strip()
        except IndexError:
            break
        if value:
            values.append(value)
    return values


def _field_name(location: str) -> str:
    segment, _, rest = location.partition("^")
    field = rest.rpartition("^")[2] if rest else ""
    return f"{segment}-{field}" if field else segment


@dataclass(frozen=True)
class Delimiters:
    """A message's MSH-1 field separator and MSH-2 encoding characters: component,
    repetition, escape, subcomponent, and from v2.7 an optional truncation character."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def encoding(self) -> str:
        """MSH-2 as written."""
        return f"{self.component}{self.repetition}{self.escape}{self.subcomponent}{self.truncation}"


STANDARD_DELIMITERS = Delimiters()


def delimiters_of(message: hl7.Message | None) -> Delimiters:
    """The sender's delimiters, for an ACK to answer in them; the standard `|^~\\&` when
    there is no MSH or its characters are not five distinct non-alphanumeric ones."""
    if message is None:
        return STANDARD_DELIMITERS
    try:
        msh = message.segment("MSH")
        field, encoding = str(msh[1]), str(msh[2])
    except (KeyError, IndexError, ValueError, TypeError):
        return STANDARD_DELIMITERS
    chars = field + encoding
    if not 5 <= len(chars) <= 6 or len(set(chars)) != len(chars):
        return STANDARD_DELIMITERS
    if any(c.isalnum() or c.isspace() for c in chars):
        return STANDARD_DELIMITERS
    return Delimiters(field, *encoding)


def _has_message_structure(version: str) -> bool:
    """Whether MSH-9 has its third component (message structure) in `version`: from v2.3.1
    on; v2.1 to v2.3 have type and trigger only. An unreadable version counts as new."""
    try:
        numbers = tuple(int(part) for part in version.strip().split("."))
    except ValueError:
        return True
    return numbers >= (2, 3, 1)


def build_ack(
    message: hl7.Message | None,
    code: AckCode,
    error: MessageError | None = None,
    control_id: str = "",
    now: datetime | None = None,
) -> bytes:
    """The ACK (original mode) for `message`: MSH (sender and receiver swapped, MSH-9
    `ACK^<trigger>^ACK` from v2.3.1 on and `ACK^<trigger>` before, MSH-11 and MSH-12 echoed),
    MSA echoing MSH-10, and MSA-3 plus an ERR segment (ERR-1 for v2.3/2.4 engines,
    ERR-2/3/4/5/8 for v2.5+) when `error` is given; an `AA` may carry one too, a warning
    (ERR-4 `W`). Written in the sender's own delimiters (MSH-1, MSH-2), as engines match
    ACKs with the parser they sent with.

    Built field by field from whatever MSH holds, so a broken MSH (no trigger event, no
    control id, no MSH at all: `message` None) still gets its ACK: every message is answered.
    `now` (UTC) is MSH-7, the current time by default. Never raises. UTF-8."""
    msh: hl7.Segment | None = None
    if message is not None:
        with contextlib.suppress(KeyError, IndexError):
            msh = message.segment("MSH")
    d = delimiters_of(message if msh is not None else None)

    def esc(text: str) -> str:
        return _escape(text, d)

    def field(position: int, components: int = 1) -> str:
        if msh is None:
            return ""
        try:
            parts = [esc(_value(msh, position, component=c)) for c in range(1, components + 1)]
        except (IndexError, KeyError, ValueError, TypeError):
            return ""  # whatever python-hl7 makes of a broken field, the ACK goes out
        return d.component.join(parts).rstrip(d.component)

    f, c, sub = d.field, d.component, d.subcomponent
    trigger = field(9, components=2).partition(c)[2]
    version = field(12) or "2.5"
    kind = "ACK"
    if trigger:
        kind = f"ACK{c}{trigger}"
        if _has_message_structure(version):
            kind += f"{c}ACK"
    sent = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    text = f"{f}".join(
        [
            f"MSH{f}{d.encoding}",
            ACK_APPLICATION,
            ACK_APPLICATION,
            field(3, 3),
            field(4, 3),
            sent,
            "",
            kind,
            esc(control_id),
            field(11) or "P",
            version,
        ]
    )
    text += f"\rMSA{f}{code.value}{f}{field(10)}"
    if error is not None:
        about = esc(error.text)
        name = _ERROR_TEXT[error.code]
        segment, *positions = error.location.split("^")
        element = c.join([segment, *positions[:2]])
        location = c.join([segment, *positions])
        text += f"{f}{about}"
        text += f.join(
            [
                "\rERR",
                f"{element}{c}{error.code.value}{sub}{name}{sub}HL70357",
                location,
                f"{error.code.value}{c}{name}{c}HL70357",
                error.severity.value,
                esc(error.application_code),
                "",
                "",
                about,
            ]
        )
    return (text + "\r").encode()


def _escape(text: str, d: Delimiters = STANDARD_DELIMITERS) -> str:
    """HL7 escape sequences for the delimiters, in text Handoff writes itself."""
    e = d.escape
    text = text.replace(e, f"{e}E{e}")
    for delimiter, name in (
        (d.field, "F"),
        (d.component, "S"),
        (d.subcomponent, "T"),
        (d.repetition, "R"),
    ):
        text = text.replace(delimiter, f"{e}{name}{e}")
    # A control character echoed (a NUL in MSH-10) goes as hexadecimal data, \Xhh\.
    return _CONTROL.sub(lambda found: f"{e}X{ord(found.group()):02X}{e}", text)
