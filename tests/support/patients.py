"""Test patients whose data must never show up in a log line, an event or a page."""

import os
from pathlib import Path
from typing import Any

from tests.support.follow_ups import FOLLOW_UP_PHONE_DIGITS

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# pytest-xdist runs tests in several worker processes: each scans its own folder of logs.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SERVICE_LOGS = ARTIFACTS / "logs" / WORKER
PAGE_BODIES = SERVICE_LOGS / "page-bodies.log"


def own_report_spool(owner: str) -> str:
    """A NOTIFY_REPORT_SPOOL in a folder of `owner`'s own, under this worker's logs. The SMS
    reply spool sits beside it under a fixed name, so notify processes sharing a folder (other
    workers', other systems') replayed each other's spooled replies and texted the wrong fake
    phones; the notify processes of one system share theirs, as replicas of one deployment."""
    return str(SERVICE_LOGS / "spool" / owner / "delivery-reports.jsonl")


# Distinctive strings, so a scan finds them wherever they leak.
INITIALS = "QZ"
NOTES = "Quentin Zebulon, MRN 99887766, DOB 1961-07-04, fentanyl since May, ex-wife calls"
SUBSTANCES = ["opioids", "stimulants", "cannabis", "alcohol"]

PHI_MARKERS = [
    INITIALS + '"',
    "Quentin",
    "Zebulon",
    "99887766",
    "1961-07-04",
    "19610704",  # the same date of birth as HL7 writes it (PID-7)
    "fentanyl",
    "ex-wife",
    *SUBSTANCES,
    FOLLOW_UP_PHONE_DIGITS,  # a follow-up callback number: sealed in the referral schema only
]


def referral_body(external_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": external_id,
        "urgency": "urgent",
        "location": "ED bay 4",
        "callback_phone": "+14105550100",
        "patient": {
            "preferred_language": "es",
            "interpreter_needed": True,
            "substances": SUBSTANCES,
            "consent": "obtained",
            "initials": INITIALS,
            "age_band": "36-45",
        },
        "notes": NOTES,
    }
    return body | changes


def record_page_body(body: str) -> None:
    """Keep what a test provider received, for the end-of-run PHI scan of every log and page."""
    with PAGE_BODIES.open("a") as bodies:
        bodies.write(body.replace("\n", " ") + "\n")
