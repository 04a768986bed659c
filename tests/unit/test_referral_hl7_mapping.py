"""HL7 v2 messages read into referrals, cancellations and moves; the ACKs that answer them."""

from datetime import UTC, datetime

import pytest

from handoff_referral.domain.hl7 import (
    UNKNOWN_ORDER,
    UNKNOWN_VISIT,
    AckCode,
    Discharged,
    ErrorCode,
    Interface,
    LocationChanged,
    MessageError,
    NewOrder,
    NotHandled,
    OrderCancelled,
    SeveralMessages,
    VisitCancelled,
    build_ack,
    check_header,
    parse,
    parse_timestamp,
    read_header,
    read_message,
    visit_key,
)
from handoff_schemas.vocabulary import Consent, GenderPreference, Substance, Urgency
from tests.support.hl7_messages import ORDER_CODE, PID_PHI, adt, interface, order

pytestmark = pytest.mark.unit

SITE = "md-mercy"
FACILITY = "MERCY"
INTERFACE = Interface.model_validate(interface(SITE, FACILITY))


def _read(raw: bytes) -> object:
    message = parse(raw)
    return read_message(message, read_header(message), INTERFACE)


def _error(raw: bytes) -> MessageError:
    with pytest.raises(MessageError) as raised:
        _read(raw)
    return raised.value


def test_a_consult_order_becomes_the_referral_the_rest_api_would_take() -> None:
    intent = _read(order(FACILITY, "C1", "ORD-1"))
    assert isinstance(intent, NewOrder)
    request = intent.request
    assert request.external_id == "ORD-1"
    assert request.urgency is Urgency.EMERGENT  # ORC-7.6 S (stat)
    assert request.location == "ED 12 B"
    assert request.callback_phone == "+14105550100"
    patient = request.patient
    assert patient.preferred_language == "es"  # SPA, ISO 639-2
    assert patient.interpreter_needed is True
    assert patient.coach_gender_preference is GenderPreference.WOMAN
    assert patient.substances == {Substance.OPIOIDS, Substance.ALCOHOL}  # OBX-5 repetitions
    assert patient.consent is Consent.OBTAINED
    assert patient.initials == "QZ"
    assert patient.age_band == "56-65"  # born 1961-07-04, admitted 2026-11-30: 65
    assert intent.visit_key == visit_key(SITE, "V1000")


def test_no_pid_value_survives_into_the_referral() -> None:
    intent = _read(order(FACILITY, "C1", "ORD-1"))
    assert isinstance(intent, NewOrder)
    stored = intent.request.model_dump_json()
    assert not [value for value in PID_PHI if value in stored]
    assert intent.visit_key is not None
    assert b"V1000" not in intent.visit_key


@pytest.mark.parametrize("ending", ["\r", "\n", "\r\n"])
def test_every_line_ending_reads_the_same(ending: str) -> None:
    intent = _read(order(FACILITY, "C1", "ORD-1", ending=ending))
    assert isinstance(intent, NewOrder)
    assert intent.request.patient.consent is Consent.OBTAINED


def test_omg_o19_with_z_segments_and_escapes_reads_like_an_orm() -> None:
    raw = order(
        FACILITY,
        "C1",
        "ORD-2",
        kind="OMG^O19",
        location="ED\\T\\Fast^7",
        extra=["ZPR|1|anything^at~all|\\E\\", "ZZZ|more"],
    )
    intent = _read(raw)
    assert isinstance(intent, NewOrder)
    assert intent.request.location == "ED&Fast 7"
    assert intent.request.patient.substances == {Substance.OPIOIDS, Substance.ALCOHOL}


def test_a_placer_number_unfit_for_an_external_id_is_named() -> None:
    assert _error(order(FACILITY, "C1", "ORD\\T\\2")).location == "ORC^1^2"


def test_utf8_names_give_folded_initials_and_other_scripts_none() -> None:
    accented = _read(order(FACILITY, "C1", "ORD-1", name="Ñúñez^Élodie"))
    assert isinstance(accented, NewOrder)
    assert accented.request.patient.initials == "EN"
    other = _read(order(FACILITY, "C1", "ORD-1", name="王^小明"))
    assert isinstance(other, NewOrder)
    assert other.request.patient.initials is None


def test_latin_1_bytes_are_read_too() -> None:
    raw = order(FACILITY, "C1", "ORD-1").replace(b"Zebulon", "Zébulon".encode("latin-1"))
    intent = _read(raw)
    assert isinstance(intent, NewOrder)
    assert intent.request.patient.initials == "QZ"


@pytest.mark.parametrize(
    ("priority", "urgency"),
    [("S", Urgency.EMERGENT), ("A", Urgency.URGENT), ("R", Urgency.ROUTINE), ("", Urgency.URGENT)],
)
def test_priority_gives_urgency_and_none_gives_the_sites_default(
    priority: str, urgency: Urgency
) -> None:
    intent = _read(order(FACILITY, "C1", "ORD-1", priority=priority))
    assert isinstance(intent, NewOrder)
    assert intent.request.urgency is urgency


def test_without_an_interpreter_answer_a_language_other_than_english_needs_one() -> None:
    spanish = _read(order(FACILITY, "C1", "O", answers={"PRC-INTERP": ""}))
    english = _read(order(FACILITY, "C1", "O", answers={"PRC-INTERP": ""}, language="ENG"))
    assert isinstance(spanish, NewOrder)
    assert isinstance(english, NewOrder)
    assert spanish.request.patient.interpreter_needed is True
    assert english.request.patient.interpreter_needed is False
    assert english.request.patient.preferred_language == "en"


@pytest.mark.parametrize(
    ("raw", "location", "code"),
    [
        (order(FACILITY, "C1", "O", pid3=""), "PID^1^3", ErrorCode.REQUIRED_FIELD_MISSING),
        (order(FACILITY, "C1", "O", order_code="LAB-CBC"), "OBR^1^4", "103"),
        (order(FACILITY, "C1", "O", dob="1961-07-04"), "PID^1^7", ErrorCode.DATA_TYPE_ERROR),
        (order(FACILITY, "C1", "O", sent_at="yesterday"), "MSH^1^7", "102"),
        (order(FACILITY, "C1", ""), "ORC^1^2", "101"),
        (order(FACILITY, "C1", "O", location=""), "PV1^1^3", "101"),
        (order(FACILITY, "C1", "O", answers={"PRC-SUBST": "OPI~HEROIN"}), "OBX^2^5", "103"),
        (order(FACILITY, "C1", "O", answers={"PRC-CONSENT": ""}), "OBX", "101"),
    ],
    ids=["pid3", "order-code", "dob", "msh7", "placer", "location", "substance", "consent"],
)
def test_a_message_that_cannot_be_taken_names_the_field_and_never_its_value(
    raw: bytes, location: str, code: str
) -> None:
    error = _error(raw)
    assert (error.location, error.code.value) == (location, code)
    ack = build_ack(parse(raw), AckCode.ERROR, error, "ACK1").decode()
    msa, err = ack.split("\r")[1:3]
    assert msa.startswith("MSA|AE|C1|")
    assert err.split("|")[2] == location
    assert err.split("|")[3].startswith(f"{code}^")
    assert not [value for value in [*PID_PHI, "HEROIN", "yesterday"] if value in ack]


def test_a_bad_admit_time_is_named() -> None:
    raw = order(FACILITY, "C1", "O").replace(b"20261130140000-0500", b"2026-11-30")
    assert _error(raw).location == "PV1^1^44"


def test_cancel_discharge_visit_cancel_and_move() -> None:
    assert _read(order(FACILITY, "C2", "ORD-1", control="CA")) == OrderCancelled("ORD-1")
    key = visit_key(SITE, "V9")
    assert _read(adt(FACILITY, "C3", "A11", visit="V9")) == VisitCancelled(key)
    assert _read(adt(FACILITY, "C4", "A03", visit="V9")) == Discharged(key)
    sent_at = parse_timestamp("20261130150000-0500", "MSH^1^7")
    assert _read(adt(FACILITY, "C5", "A08", visit="V9", location="ED^3")) == LocationChanged(
        key, "ED 3", False, sent_at
    )


def test_other_types_and_order_controls_are_not_handled() -> None:
    assert _read(adt(FACILITY, "C1", "A01")) == NotHandled()
    assert _read(order(FACILITY, "C1", "ORD-1", control="SC")) == NotHandled()


def test_an_adt_without_a_visit_number_names_pv1_19() -> None:
    assert _error(adt(FACILITY, "C1", "A03", visit="")).location == "PV1^1^19"


def test_a_utf8_byte_order_mark_before_msh_is_dropped() -> None:
    # Some Windows engines write one; it is not content, and the ACK must echo MSH-10.
    raw = order(FACILITY, "C-BOM", "ORD-BOM")
    assert _read(b"\xef\xbb\xbf" + raw) == _read(raw)
    ack = build_ack(parse(b"\xef\xbb\xbf" + raw), AckCode.ACCEPTED, control_id="A1").decode()
    assert ack.split("\r")[1] == "MSA|AA|C-BOM"


def test_the_ack_answers_in_the_senders_own_delimiters() -> None:
    raw = order(FACILITY, "C-HASH", "ORD-HASH").replace(b"|", b"#")
    message = parse(raw)
    assert read_header(message).control_id == "C-HASH"
    error = MessageError("OBX^2^5", ErrorCode.DATA_TYPE_ERROR, "a # and a | in the text")
    msh, msa, err = build_ack(message, AckCode.ERROR, error, "A1").decode().split("\r")[:3]
    assert msh.startswith("MSH#^~\\&#HANDOFF#HANDOFF#EPIC#" + FACILITY + "#")
    assert msh.split("#")[8:12] == ["ACK^O01", "A1", "P", "2.3"]
    # The sender's field separator in Handoff's own text is escaped; `|` is plain text.
    assert msa == "MSA#AE#C-HASH#a \\F\\ and a | in the text"
    assert err.split("#")[2] == "OBX^2^5"
    # Delimiters that are not five distinct punctuation characters: the standard ones; and
    # python-hl7's assertion on repeated ones is an AE "MSH is malformed", not a crash.
    odd = parse(order(FACILITY, "C-ODD", "ORD-ODD").replace(b"^~\\&", b"^~\\A", 1))
    assert build_ack(odd, AckCode.ACCEPTED).decode().startswith("MSH|^~\\&|HANDOFF")
    with pytest.raises(MessageError, match="malformed"):
        parse(order(FACILITY, "C-DUP", "ORD-DUP").replace(b"^~\\&", b"^^\\&", 1))


def test_garbage_gets_an_ack_anyway() -> None:
    with pytest.raises(MessageError) as raised:
        parse(b"hello")
    ack = build_ack(None, AckCode.ERROR, raised.value).decode()
    assert ack.split("\r")[1].startswith("MSA|AE|")


def test_accepted_ack_echoes_the_control_id_and_swaps_sender_and_receiver() -> None:
    message = parse(order(FACILITY, "CTRL-77", "ORD-1"))
    msh, msa = build_ack(message, AckCode.ACCEPTED, control_id="A1").decode().split("\r")[:2]
    fields = msh.split("|")
    assert fields[2:6] == ["HANDOFF", "HANDOFF", "EPIC", FACILITY]
    assert fields[9] == "A1"
    assert msa == "MSA|AA|CTRL-77"


def test_hl7_times_with_and_without_offsets() -> None:
    assert parse_timestamp("20261130143000-0500", "X") == datetime(2026, 11, 30, 19, 30, tzinfo=UTC)
    assert parse_timestamp("202611", "X") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(MessageError):
        parse_timestamp("20261340", "X")


def test_an_hl7_time_outside_the_calendar_once_in_utc_is_a_data_type_error() -> None:
    """fresh33b: MSH-7 00010101000000+1400 is in year 0 in UTC; it was answered AR
    ("resend"), which an engine retries for ever, not AE naming the field."""
    for value in ("00010101000000+1400", "99991231235959-1200"):
        with pytest.raises(MessageError) as refused:
            parse_timestamp(value, "MSH^1^7")
        assert refused.value.code is ErrorCode.DATA_TYPE_ERROR


def test_segments_handoff_does_not_read_are_dropped_before_parsing() -> None:
    """Next of kin, insurance and Z-segments carry PHI or nothing Handoff uses."""
    raw = order(FACILITY, "C1", "O", extra=["NK1|1|Zebulon^Ann|SPO", "IN1|1|BCBS", "ZPR|1|x"])
    message = parse(raw)
    for name in ("NK1", "IN1", "ZPR"):
        with pytest.raises(KeyError):
            message.segment(name)
    assert isinstance(read_message(message, read_header(message), INTERFACE), NewOrder)


@pytest.mark.parametrize("kind", ["ACK", "ORM", "ADT", ""])
def test_an_msh_9_without_a_trigger_event_still_gets_its_ack(kind: str) -> None:
    raw = order(FACILITY, "C9", "ORD-9", kind=kind)
    message = parse(raw)
    header = read_header(message)
    assert header.message_type == kind
    for code in AckCode:
        msh, msa = build_ack(message, code, control_id="A9").decode().split("\r")[:2]
        assert msh.split("|")[8] == "ACK"
        assert msa == f"MSA|{code.value}|C9"
    if kind:
        check_header(header)  # a type Handoff does not handle: AA, ignored
        assert isinstance(read_message(message, header, INTERFACE), NotHandled)
    else:
        with pytest.raises(MessageError) as raised:
            check_header(header)
        assert raised.value.location == "MSH^1^9"


@pytest.mark.parametrize(
    ("version", "kind"),
    [
        # MSH-9.3, the message structure, exists from v2.3.1 on: a v2.3 parser sees a
        # third component as an error.
        ("2.3", "ACK^A08"),
        ("2.2", "ACK^A08"),
        ("2.3.1", "ACK^A08^ACK"),
        ("2.4", "ACK^A08^ACK"),
        ("2.5.1", "ACK^A08^ACK"),
        ("", "ACK^A08^ACK"),  # no MSH-12: the ACK says 2.5
    ],
)
def test_the_ack_echoes_the_trigger_event_in_the_shape_of_the_version(
    version: str, kind: str
) -> None:
    raw = adt(FACILITY, "C10", "A08").replace(b"|P|2.3\r", f"|P|{version}\r".encode(), 1)
    msh = build_ack(parse(raw), AckCode.ACCEPTED).decode().split("\r")[0].split("|")
    assert (msh[8], msh[11]) == (kind, version or "2.5")


def test_an_msh_cut_short_still_gets_its_ack() -> None:
    short = parse(b"MSH|^~\\&|EPIC")
    msh, msa = build_ack(short, AckCode.REJECTED, control_id="A1").decode().split("\r")[:2]
    assert msh.split("|")[4:6] == ["EPIC", ""]
    assert msa == "MSA|AR|"


def test_an_empty_control_id_is_refused_after_the_sender_is_known() -> None:
    header = read_header(parse(order(FACILITY, "", "ORD-11")))
    assert (header.sending_application, header.sending_facility) == ("EPIC", FACILITY)
    with pytest.raises(MessageError) as raised:
        check_header(header)
    assert raised.value.location == "MSH^1^10"


def test_two_messages_in_one_frame_are_refused_whole_naming_the_problem() -> None:
    raw = order(FACILITY, "C12", "ORD-12") + order(FACILITY, "C13", "ORD-13")
    with pytest.raises(SeveralMessages) as raised:
        parse(raw)
    assert "one message per frame" in raised.value.text
    ack = build_ack(raised.value.header, AckCode.ERROR, raised.value).decode()
    assert ack.split("\r")[1].startswith("MSA|AE|C12|")  # the control id the engine waits on


@pytest.mark.parametrize(
    "raw",
    [
        # An engine that left out the end block: the second message behind a start block.
        order(FACILITY, "C12", "ORD-12") + b"\x0b" + order(FACILITY, "C13", "ORD-13"),
        # \n endings, and the second message with other encoding characters.
        (
            order(FACILITY, "C12", "ORD-12") + adt(FACILITY, "C13", "A08").replace(b"|", b"#")
        ).replace(b"\r", b"\n"),
        # An HL7 batch of one message.
        b"FHS|^~\\&|EPIC\rBHS|^~\\&|EPIC\r" + order(FACILITY, "C12", "ORD-12") + b"BTS|1\rFTS|1\r",
    ],
    ids=["stray-start-block", "other-separators", "batch"],
)
def test_every_way_of_two_messages_in_a_frame_is_refused_whole(raw: bytes) -> None:
    with pytest.raises(SeveralMessages) as raised:
        parse(raw)
    assert "one message per frame" in raised.value.text
    assert "none of them was taken" in raised.value.text
    ack = build_ack(raised.value.header, AckCode.ERROR, raised.value).decode()
    assert ack.split("\r")[1].startswith("MSA|AE|C12|")


@pytest.mark.parametrize(
    ("warning", "location", "code"),
    [(UNKNOWN_ORDER, "ORC^1^2", "unknown_order"), (UNKNOWN_VISIT, "PV1^1^19", "unknown_visit")],
)
def test_an_unknown_order_or_visit_is_accepted_with_a_warning_naming_it(
    warning: MessageError, location: str, code: str
) -> None:
    message = parse(order(FACILITY, "C20", "ORD-20", control="CA"))
    _, msa, err = build_ack(message, AckCode.ACCEPTED, warning, "A1").decode().split("\r")[:3]
    assert msa.split("|")[:3] == ["MSA", "AA", "C20"]
    assert "nothing was" in msa.split("|")[3]  # MSA-3 says so to engines reading only MSA
    fields = err.split("|")
    assert fields[2] == location
    assert fields[3] == "204^Unknown key identifier^HL70357"
    assert (fields[4], fields[5]) == ("W", code)  # ERR-4 severity, ERR-5 application code


def test_an_over_long_location_is_cut_to_40_characters_not_refused() -> None:
    long = "EMERGENCYDEPARTMENTNORTHWING^ROOM12345678901234^BED-A-WINDOW"
    intent = _read(order(FACILITY, "C14", "ORD-14", location=long))
    assert isinstance(intent, NewOrder)
    assert intent.request.location == "EMERGENCYDEPARTMENTNORTHWING ROOM1234567"
    assert intent.location_cut is True
    moved = _read(adt(FACILITY, "C15", "A08", location=long))
    assert isinstance(moved, LocationChanged)
    assert (len(moved.location), moved.location_cut) == (40, True)
    short = _read(order(FACILITY, "C16", "ORD-16"))
    assert isinstance(short, NewOrder)
    assert short.location_cut is False


@pytest.mark.parametrize(
    ("name", "initials"),
    [
        ("O\\T\\Brien^Mary", "MO"),
        ("Ωmega^Ψi", None),  # Greek: no Latin initial, so none
        ("Øster^Åse", None),  # Ø has no decomposition to a Latin letter: none at all
        ("Doe^Jane~Roe^Janet", "JD"),  # the first repetition
    ],
)
def test_initials_are_kept_only_when_both_letters_have_a_latin_initial(
    name: str, initials: str | None
) -> None:
    intent = _read(order(FACILITY, "C17", "ORD-17", name=name))
    assert isinstance(intent, NewOrder)
    assert intent.request.patient.initials == initials


def test_a_second_order_patient_or_visit_in_one_message_is_refused_not_dropped() -> None:
    """fresh33b: an ORM with two ORC/OBR orders got AA and the second order was silently
    dropped; two PID or PV1 segments, the first was read. HL7 v2.5.1 lets an ORM carry
    several orders: each must be its own referral, so the message is refused whole."""
    second_order = ["ORC|NW|P2^EPIC|||||^^^^^S", f"OBR|2|P2^EPIC||{ORDER_CODE}^Consult^L"]
    cases = {
        "ORC^2": second_order,
        "PID^2": ["PID|2||999^^^MERCY^MR||Doe^Jo||19800101|F"],
        "PV1^2": ["PV1|2|E|ICU^4^D|E"],
    }
    for location, extra in cases.items():
        error = _error(order(FACILITY, "C1", "P1", extra=extra))
        assert (error.location, error.code) == (location, ErrorCode.SEGMENT_SEQUENCE_ERROR)
    assert _error(adt(FACILITY, "C2", "A08") + b"PV1|2|E|ICU^4^D|E\r").location == "PV1^2"


def test_a_question_answered_twice_is_refused_naming_the_second_obx() -> None:
    """fresh33b: substances OPI then ALC in two OBX read as alcohol alone (opioids lost);
    consent Y then P read as pending."""
    raw = order(FACILITY, "C1", "P1", extra=["OBX|5|CE|PRC-SUBST^Question||ALC||||||F"])
    error = _error(raw)
    assert (error.location, error.code) == ("OBX^5^3", ErrorCode.DUPLICATE_KEY)


def test_the_age_band_turns_on_the_eds_own_date_not_utcs() -> None:
    """fresh33b: born 2008-12-03; at 23:00 on 2 December in Baltimore (-0500) the patient is
    17, but the age was taken on the UTC date (3 December): 18-25."""
    admitted_late = order(FACILITY, "C1", "P1", dob="20081203").replace(
        b"20261130140000-0500", b"20261202230000-0500"
    )
    sent_late = order(FACILITY, "C2", "P2", dob="20081203", sent_at="20261202230000-0500")
    sent_late = sent_late.replace(b"20261130140000-0500", b"")  # no PV1-44: MSH-7's date
    for raw in (admitted_late, sent_late):
        intent = _read(raw)
        assert isinstance(intent, NewOrder)
        assert intent.request.patient.age_band == "under_18"


def test_a_version_that_is_no_v2_release_or_an_overlong_control_id_is_refused() -> None:
    """fresh33b: MSH-12 9.9 and a 5,000-character MSH-10 (echoed back in MSA-2) were taken."""
    for raw, location, code in (
        (
            adt(FACILITY, "C11", "A08").replace(b"|P|2.3\r", b"|P|9.9\r", 1),
            "MSH^1^12",
            ErrorCode.UNSUPPORTED_VERSION,
        ),
        (adt(FACILITY, "C" * 200, "A08"), "MSH^1^10", ErrorCode.DATA_TYPE_ERROR),
    ):
        with pytest.raises(MessageError) as refused:
            check_header(read_header(parse(raw)))
        assert (refused.value.location, refused.value.code) == (location, code)
    for version in ("2.2", "2.3.1", "2.5.1", "2.8", ""):
        check_header(
            read_header(
                parse(
                    adt(FACILITY, "C" * 199, "A08").replace(
                        b"|P|2.3\r", f"|P|{version}\r".encode(), 1
                    )
                )
            )
        )


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (order(FACILITY, "C40", "ORD\x0040"), "ORC^1^2"),
        (order(FACILITY, "C4\x001", "ORD-41"), "MSH^1^10"),
        (order(FACILITY, "C42", "ORD-42", priority="S\x00"), "ORC^1^7"),
        (order(FACILITY, "C43", "ORD-43", location="ED^1\x072"), "PV1^1^3"),
    ],
    ids=["placer", "control-id", "priority", "bell-in-location"],
)
def test_a_control_character_in_a_field_is_an_ae_naming_it(raw: bytes, location: str) -> None:
    """fresh34b: a NUL in ORC-2 or MSH-10 was an AR ("resend", for ever) from PostgreSQL; one
    in ORC-7 was taken, and the stat order became routine."""
    with pytest.raises(MessageError) as raised:
        parse(raw)
    assert (raised.value.location, raised.value.code) == (location, ErrorCode.DATA_TYPE_ERROR)
    assert "nothing was taken" in raised.value.text
    ack = build_ack(raised.value.header, AckCode.ERROR, raised.value).decode()
    assert not [c for c in ack if c < " " and c != "\r"]
    msa = ack.split("\r")[1]
    assert msa.startswith("MSA|AE|C4\\X00\\1|" if location == "MSH^1^10" else "MSA|AE|C4")


def test_an_a08_move_to_a_location_with_a_direction_override_is_refused() -> None:
    """fresh34b: ORM, REST and FHIR refused it; an A08 moved the visit's referrals to it."""
    error = _error(adt(FACILITY, "C44", "A08", location="ED \u202e4"))
    assert (error.location, error.code) == ("PV1^1^3", ErrorCode.DATA_TYPE_ERROR)


@pytest.mark.parametrize("cut_at", [40, 67, 3, 0], ids=["in-msh-7", "in-msh-10", "msh", "empty"])
def test_a_message_cut_short_then_a_whole_one_behind_a_start_block_echoes_the_whole_one(
    cut_at: int,
) -> None:
    """fresh34b, fresh34d: the ACK echoed "MERCY", or a fragment of MSH-10, or nothing, as the
    control id, read from the cut-off header; cut to "MSH" it named MSH-1."""
    cut = order(FACILITY, "C45-LONG-ID", "ORD-45")[:cut_at]
    with pytest.raises(SeveralMessages) as raised:
        parse(cut + b"\r\x0b" + order(FACILITY, "C46", "ORD-46"))
    assert "one message per frame" in raised.value.text
    ack = build_ack(raised.value.header, AckCode.ERROR, raised.value).decode()
    assert ack.split("\r")[1].startswith("MSA|AE|C46|")


def test_a_c1_control_character_is_refused_and_windows_1252_text_is_read() -> None:
    """fresh34d: U+0085 in PID-5 or MSH-10 was taken. Windows-1252 bytes 0x80-0x9F (a
    curly apostrophe, 0x92) are letters, not control characters."""
    with pytest.raises(MessageError) as raised:
        parse(order(FACILITY, "C48", "ORD-48", name="O\u0085BRIEN^ANNE^^"))
    assert raised.value.location == "PID^1^5"
    windows = order(FACILITY, "C49", "ORD-49", name="O\u2019BRIEN^ANNE^^").decode().encode("cp1252")
    assert b"O\x92BRIEN" in windows
    assert isinstance(_read(windows), NewOrder)


@pytest.mark.parametrize(
    ("priority", "urgency"), [("STAT", Urgency.EMERGENT), ("asap", Urgency.URGENT)]
)
def test_a_priority_spelled_out_is_read_as_its_code(priority: str, urgency: Urgency) -> None:
    intent = _read(order(FACILITY, "C47", "ORD-47", priority=priority))
    assert isinstance(intent, NewOrder)
    assert intent.request.urgency is urgency


def test_a_start_block_inside_msh_itself_still_echoes_its_control_id() -> None:
    """fresh34e: a 0x0B inside MSH-3 to MSH-9 of one whole message echoed an empty id."""
    raw = order(FACILITY, "C50", "ORD-50").replace(b"|EPIC|", b"|EP\x0bIC|", 1)
    with pytest.raises(SeveralMessages) as raised:
        parse(raw)
    ack = build_ack(raised.value.header, AckCode.ERROR, raised.value).decode()
    assert ack.split("\r")[1].startswith("MSA|AE|C50|")
