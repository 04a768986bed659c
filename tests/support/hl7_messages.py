"""HL7 v2 messages as a hospital's integration engine sends them, for tests and benchmarks.

The patient is the test patient of tests/support/patients.py: a scan for the name, the MRN
and the date of birth finds them wherever they leak.
"""

from typing import Any

ORDER_CODE = "PRC-PEER"
APPLICATION = "EPIC"
MRN = "99887766"
FAMILY, GIVEN = "Zebulon", "Quentin"
DOB = "19610704"
PID_PHI = [FAMILY, GIVEN, MRN, DOB, "1961-07-04"]
"""What PID carries that must not leave the message: found in no event, log line or table."""


def interface(site_id: str, facility: str, **changes: Any) -> dict[str, Any]:
    """An interface file's content, as `handoff referral interface add` reads it."""
    mapping: dict[str, Any] = {
        "site_id": site_id,
        "sending_application": APPLICATION,
        "sending_facility": facility,
        "order_codes": [ORDER_CODE],
        "callback_phone": "+14105550100",
        "questions": {
            "consent": {"code": "PRC-CONSENT", "answers": {"Y": "obtained", "P": "pending"}},
            "substances": {
                "code": "PRC-SUBST",
                "answers": {"OPI": "opioids", "ALC": "alcohol", "STIM": "stimulants"},
            },
            "interpreter": {"code": "PRC-INTERP", "answers": {"Y": True, "N": False}},
            "coach_preference": {
                "code": "PRC-COACH",
                "answers": {"F": "woman", "M": "man", "X": "nonbinary", "NP": None},
            },
        },
    }
    return mapping | changes


def order(
    facility: str,
    control_id: str,
    placer: str,
    *,
    kind: str = "ORM^O01",
    control: str = "NW",
    order_code: str = ORDER_CODE,
    visit: str = "V1000",
    location: str = "ED^12^B",
    priority: str = "S",
    pid3: str = f"{MRN}^^^MERCY^MR~55501^^^SSA^SS",
    dob: str = DOB,
    name: str = f"{FAMILY}^{GIVEN}^^",
    language: str = "SPA^Spanish^HL70296",
    answers: dict[str, str] | None = None,
    extra: list[str] | None = None,
    sent_at: str = "20261130143000-0500",
    ending: str = "\r",
) -> bytes:
    """An ORM^O01 (or OMG^O19) consult order; `answers` replace the OBX answers by question."""
    chosen = {
        "PRC-CONSENT": "Y",
        "PRC-SUBST": "OPI~ALC",
        "PRC-INTERP": "Y",
        "PRC-COACH": "F",
    } | (answers or {})
    version = "2.5.1" if kind == "OMG^O19" else "2.3"
    segments = [
        f"MSH|^~\\&|{APPLICATION}|{facility}|HANDOFF|HANDOFF|{sent_at}||{kind}|{control_id}|P|"
        f"{version}",
        f"PID|1||{pid3}||{name}||{dob}|M|||1 Main St^^Baltimore^MD^21201||(410)555-0199||"
        f"{language}",
        f"PV1|1|E|{location}|E|||1234^Welby^Marcus||||||||||||{visit}|||||||||||||||||||||||||"
        f"20261130140000-0500",
        f"ORC|{control}|{placer}^EPIC|||||^^^^^{priority}||20261130142900-0500",
        f"OBR|1|{placer}^EPIC||{order_code}^Peer recovery coach consult^L",
        *(
            f"OBX|{n}|CE|{code}^Question||{value}||||||F"
            for n, (code, value) in enumerate(chosen.items(), start=1)
            if value
        ),
        *(extra or []),
    ]
    return ending.join(segments).encode() + ending.encode()


def adt(
    facility: str,
    control_id: str,
    trigger: str,
    *,
    visit: str = "V1000",
    location: str = "ED^12^B",
    sent_at: str = "20261130150000-0500",
) -> bytes:
    """An ADT^A03, A08 or A11 about the visit, sent (MSH-7) at `sent_at`."""
    segments = [
        f"MSH|^~\\&|{APPLICATION}|{facility}|HANDOFF|HANDOFF|{sent_at}||ADT^{trigger}|"
        f"{control_id}|P|2.3",
        f"EVN|{trigger}|{sent_at}",
        f"PID|1||{MRN}^^^MERCY^MR||{FAMILY}^{GIVEN}||{DOB}|M",
        f"PV1|1|E|{location}|E|||||||||||||||{visit}",
    ]
    return "\r".join(segments).encode() + b"\r"
