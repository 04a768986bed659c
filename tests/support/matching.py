"""A roster and referrals for matching tests: four coaches, one site, always on call."""

import uuid
from datetime import UTC, datetime
from typing import Any

from handoff_matching.roster_file import RosterFile
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import ReferralCreated, SiteFacts
from handoff_schemas.vocabulary import Consent, Substance, Urgency
from tests.support.kafka import read_topic

SPANISH_SPEAKER, ENGLISH_SPEAKER, STATE_COACH, SUPERVISOR = (uuid.uuid4() for _ in range(4))
EVERY_DAY = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def always_on_call(coach_id: uuid.UUID, pool: str) -> list[dict[str, Any]]:
    """Roster shifts that put a coach on call for `pool` around the clock, every day."""
    return [
        {
            "coach_id": str(coach_id),
            "pool": pool,
            "weekday": day,
            "start": "00:00",
            "end": "00:00",
            "time_zone": "America/New_York",
        }
        for day in EVERY_DAY
    ]


def roster_coach(
    coach_id: uuid.UUID, phone: str, state: str, max_concurrent: int
) -> dict[str, Any]:
    """A roster file's coach: texted at `phone`, English, certified in `state` to 2030."""
    return {
        "coach_id": str(coach_id),
        "display_name": "Coach",
        "contact_methods": [{"channel": "sms", "destination": phone}],
        "languages": ["en"],
        "max_concurrent": max_concurrent,
        "certifications": [{"state": state, "credential": "CPRS", "expires_on": "2030-01-01"}],
    }


def demo_roster(site_id: str) -> RosterFile:
    def coach(coach_id: uuid.UUID, languages: list[str]) -> dict[str, Any]:
        return {
            "coach_id": str(coach_id),
            "display_name": "Coach",
            "contact_methods": [{"channel": "sms", "destination": "+14105550199"}],
            "languages": languages,
            # The tests share these coaches, and leave referrals open: room for them all.
            # (Load-aware dispatch is tested with coaches of its own.)
            "max_concurrent": 10,
            "certifications": [{"state": "MD", "credential": "CPRS", "expires_on": "2030-01-01"}],
        }

    return RosterFile.model_validate(
        {
            "coaches": [
                coach(SPANISH_SPEAKER, ["es"]),
                coach(ENGLISH_SPEAKER, ["en"]),
                coach(STATE_COACH, ["es-US"]),
                coach(SUPERVISOR, ["en"]),
            ],
            "shifts": [
                *always_on_call(SPANISH_SPEAKER, f"site:{site_id}"),
                *always_on_call(ENGLISH_SPEAKER, f"site:{site_id}"),
                *always_on_call(STATE_COACH, "state:MD"),
            ],
        }
    )


def referral_created(
    site_id: str,
    language: str = "es",
    interpreter_needed: bool = True,
    *,
    state: str = "MD",
    urgency: Urgency = Urgency.URGENT,
    substances: frozenset[Substance] = frozenset({Substance.OPIOIDS}),
) -> ReferralCreated:
    """A new referral at the site ("Test ED", America/New_York), received now."""
    return ReferralCreated(
        referral_id=uuid.uuid4(),
        site=SiteFacts(
            site_id=site_id, short_name="Test ED", state=state, time_zone="America/New_York"
        ),
        urgency=urgency,
        location="ED bay 4",
        callback_phone="+14105550100",
        preferred_language=language,
        interpreter_needed=interpreter_needed,
        substances=substances,
        consent=Consent.OBTAINED,
        received_at=datetime.now(UTC),
    )


async def dispatched(bootstrap: str, referral_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """What matching has put on handoff.dispatch for each of these referrals, in order (the
    events' data)."""
    wanted = {str(r).encode(): r for r in referral_ids}
    events: dict[uuid.UUID, list[Any]] = {r: [] for r in referral_ids}
    for record in await read_topic(bootstrap, Topic.DISPATCH):
        if record.key in wanted:
            events[wanted[record.key]].append(decode_event(record.value).data)
    return events
