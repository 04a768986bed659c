"""HL7 v2 over MLLP into the referral service, on a real socket, Kafka and PostgreSQL: what a
hospital's integration engine sends, and what it gets back."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from faststream.kafka import KafkaBroker

from handoff_devenv.ports import free_ports
from handoff_platform.database import create_pool
from handoff_platform.kafka import make_broker
from handoff_platform.outbox import Outbox
from handoff_referral import SCHEMA
from handoff_referral.adapters import hl7_store
from handoff_referral.adapters import postgres as store
from handoff_referral.adapters.key_cache import KeyCache
from handoff_referral.app import ReferralRuntime, apply_migrations
from handoff_referral.domain.hl7 import Interface
from handoff_referral.domain.referral import Referral, Site
from handoff_referral.entrypoints.mllp import END_BLOCK, MllpServer, frame
from handoff_referral.hl7_intake import Hl7Intake
from handoff_referral.service import ReferralService
from handoff_schemas import Topic
from handoff_schemas.catalog import decode_event
from handoff_schemas.events import (
    ReferralCancelled,
    ReferralCreated,
    ReferralUpdated,
)
from handoff_schemas.vocabulary import CoachResponse
from tests.integration.conftest import create_database, outbox_empty, register_site
from tests.support.events import coach_assigned, coach_responded
from tests.support.hl7_messages import PID_PHI, adt, interface, order
from tests.support.kafka import read_topic, send
from tests.support.patients import SERVICE_LOGS
from tests.support.stored_rows import leaks, stored_rows, written_since
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

HANDOFF = [sys.executable, "-m", "handoff_cli"]


class Connection:
    """One MLLP connection of an integration engine: a message out, its ACK back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, message: bytes) -> "Ack":
        self.writer.write(frame(message))
        await self.writer.drain()
        answer = await asyncio.wait_for(self.reader.readuntil(END_BLOCK), timeout=30)
        assert answer.startswith(b"\x0b")
        return Ack(answer[1 : -len(END_BLOCK)].decode())

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@dataclass
class Ack:
    text: str

    def segment(self, name: str) -> list[str]:
        lines = [s for s in self.text.split("\r") if s.startswith(name + "|")]
        assert lines, f"no {name} in {self.text!r}"
        return lines[0].split("|")

    @property
    def code(self) -> str:
        return self.segment("MSA")[1]


@dataclass
class Engine:
    """A site's integration engine, registered as an interface, with an open connection."""

    site: Site
    facility: str
    connection: Connection
    runtime: ReferralRuntime

    async def send(self, message: bytes) -> Ack:
        return await self.connection.send(message)

    async def referral(self, placer: str) -> Referral:
        async with self.runtime.pool.acquire() as connection:
            found = await store.find_by_external_id(connection, self.site.site_id, placer)
        assert found is not None, f"no referral for {placer}"
        return await self.runtime.service.get(self.site, found[0])

    async def referral_count(self, placer: str) -> int:
        async with self.runtime.pool.acquire() as connection:
            count: int = await connection.fetchval(
                "SELECT count(*) FROM referral.referrals WHERE site_id = $1 AND external_id = $2",
                self.site.site_id,
                placer,
            )
        return count


EngineFactory = Callable[[], Awaitable[Engine]]


@pytest.fixture(scope="module")
async def mllp_port(referral: ReferralRuntime) -> AsyncIterator[int]:
    """The MLLP listener over the running referral service's own ReferralService."""
    server = MllpServer(Hl7Intake(referral.service).receive)
    port = await server.start("127.0.0.1", 0)
    yield port
    await server.close()


@pytest.fixture
async def engine(referral: ReferralRuntime, mllp_port: int) -> AsyncIterator[EngineFactory]:
    connections: list[Connection] = []

    async def make() -> Engine:
        site, _, _ = await register_site(referral)
        facility = f"F{uuid.uuid4().hex[:10].upper()}"
        async with referral.pool.acquire() as connection:
            await hl7_store.save_interface(
                connection, Interface.model_validate(interface(site.site_id, facility))
            )
        connections.append(await Connection.open(mllp_port))
        return Engine(site, facility, connections[-1], referral)

    yield make
    for connection in connections:
        await connection.close()


def _ids() -> tuple[str, str, str]:
    """A control id, a placer order number and a visit number of the test's own."""
    suffix = uuid.uuid4().hex[:12].upper()
    return f"C{suffix}", f"ORD-{suffix}", f"V{suffix}"


async def _events(runtime: ReferralRuntime, bootstrap: str, referral_id: uuid.UUID) -> list[Any]:
    await eventually(lambda: outbox_empty(runtime), within=30, what="the outbox to drain")
    records = await read_topic(bootstrap, Topic.REFERRALS)
    key = str(referral_id).encode()
    return [(r.value.decode(), decode_event(r.value)) for r in records if r.key == key]


async def test_a_consult_order_is_a_referral_committed_with_its_event_before_the_aa(
    engine: EngineFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    ack = await ed.send(order(ed.facility, control_id, placer, visit=visit))
    assert ack.code == "AA", ack.text
    assert ack.segment("MSA")[2] == control_id
    assert ack.segment("MSH")[4:6] == ["EPIC", ed.facility]

    # Committed by the time the AA left: read at once, no waiting.
    created = await ed.referral(placer)
    assert created.request.urgency.value == "emergent"
    assert created.request.location == "ED 12 B"
    assert created.request.patient.initials == "QZ"
    assert created.request.patient.age_band == "56-65"
    assert [s.step.value for s in created.timeline] == ["received"]
    assert created.correlation_id == f"hl7:{control_id}"

    [(wire, envelope)] = await _events(referral, kafka_topics, created.referral_id)
    assert isinstance(envelope.data, ReferralCreated)
    assert envelope.data.site.site_id == ed.site.site_id
    assert envelope.data.location == "ED 12 B"
    assert envelope.data.preferred_language == "es"
    assert {s.value for s in envelope.data.substances} == {"opioids", "alcohol"}
    assert envelope.correlationid == f"hl7:{control_id}"
    assert not [value for value in [*PID_PHI, visit, "QZ"] if value in wire]


async def test_omg_o19_with_newline_endings_and_z_segments_is_a_referral(
    engine: EngineFactory,
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    message = order(
        ed.facility,
        control_id,
        placer,
        kind="OMG^O19",
        visit=visit,
        ending="\n",
        name="Ñúñez^Élodie",
        extra=["ZPR|1|cust\\F\\om^x~y|more", "ZED|bay\\T\\board"],
    )
    ack = await ed.send(message)
    assert ack.code == "AA", ack.text
    created = await ed.referral(placer)
    assert created.request.patient.initials == "EN"
    assert created.request.patient.consent.value == "obtained"


async def test_a_resent_message_or_placer_number_is_acknowledged_and_creates_nothing(
    engine: EngineFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    message = order(ed.facility, control_id, placer, visit=visit)
    assert (await ed.send(message)).code == "AA"
    again = await ed.send(message)  # the engine did not see the first ACK
    assert (again.code, again.segment("MSA")[2]) == ("AA", control_id)
    # The same order under a new control id, and resent with \r\n: still the one referral.
    assert (await ed.send(order(ed.facility, control_id + "B", placer, visit=visit))).code == "AA"
    resent = order(ed.facility, control_id, placer, visit=visit, ending="\r\n")
    assert (await ed.send(resent)).code == "AA"
    assert await ed.referral_count(placer) == 1
    created = await ed.referral(placer)
    assert len(await _events(referral, kafka_topics, created.referral_id)) == 1

    # The control id reused for another message is an error the engine must look at.
    reused = await ed.send(order(ed.facility, control_id, placer + "X", visit=visit))
    assert reused.code == "AE"
    assert reused.segment("ERR")[2:4] == ["MSH^1^10", "205^Duplicate key identifier^HL70357"]
    assert await ed.referral_count(placer + "X") == 0


async def test_a_failure_after_the_referral_committed_is_ar_and_the_resend_completes_it(
    engine: EngineFactory, referral: ReferralRuntime, kafka_topics: str, monkeypatch: Any
) -> None:
    """The referral committed, then recording the control id and visit failed (the process
    died there, or the database went away): no AA went out, so the engine resends."""
    ed = await engine()
    control_id, placer, visit = _ids()
    record = hl7_store.record_message

    async def fails_once(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(hl7_store, "record_message", record)
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(hl7_store, "record_message", fails_once)
    message = order(ed.facility, control_id, placer, visit=visit)
    assert (await ed.send(message)).code == "AR"
    assert await ed.referral_count(placer) == 1  # committed before the failure

    assert (await ed.send(message)).code == "AA"
    assert await ed.referral_count(placer) == 1
    created = await ed.referral(placer)
    assert len(await _events(referral, kafka_topics, created.referral_id)) == 1
    # The resend linked the visit: a discharge finds the referral.
    assert (await ed.send(adt(ed.facility, control_id + "D", "A03", visit=visit))).code == "AA"
    assert (await ed.referral(placer)).status.value == "cancelled"


async def test_an_unknown_order_code_is_ae_naming_obr_4_and_creates_nothing(
    engine: EngineFactory,
) -> None:
    ed = await engine()
    control_id, placer, _ = _ids()
    ack = await ed.send(order(ed.facility, control_id, placer, order_code="LAB-CBC"))
    assert ack.code == "AE"
    err = ack.segment("ERR")
    assert err[2] == "OBR^1^4"
    assert err[3].startswith("103^")
    assert "order code" in err[8]
    assert await ed.referral_count(placer) == 0


async def test_a_missing_pid_3_is_ae_naming_it(engine: EngineFactory) -> None:
    ed = await engine()
    control_id, placer, _ = _ids()
    ack = await ed.send(order(ed.facility, control_id, placer, pid3=""))
    assert (ack.code, ack.segment("ERR")[2]) == ("AE", "PID^1^3")
    assert not [value for value in PID_PHI if value in ack.text]


async def test_a_nul_byte_is_ae_naming_its_field_and_the_fixed_resend_is_taken(
    engine: EngineFactory,
) -> None:
    """fresh34b: a NUL in ORC-2 was an AR ("resend"), which an engine retries for ever with
    every later order behind it; one in ORC-7 was taken, the stat order made routine, and
    the fixed resend refused as a reused control id."""
    ed = await engine()
    for field, (control_id, placer, _) in (("ORC^1^2", _ids()), ("ORC^1^7", _ids())):
        broken = order(ed.facility, control_id, placer, priority="S")
        broken = (
            broken.replace(placer.encode(), placer.encode() + b"\x00", 1)
            if field == "ORC^1^2"
            else broken.replace(b"^^^^^S|", b"^^^^^S\x00|", 1)
        )
        ack = await ed.send(broken)
        assert (ack.code, ack.segment("ERR")[2]) == ("AE", field)
        assert await ed.referral_count(placer) == 0
        fixed = await ed.send(order(ed.facility, control_id, placer, priority="S"))
        assert fixed.code == "AA"
        assert await ed.referral_count(placer) == 1


async def test_an_unknown_sender_is_rejected_so_the_engine_retries(
    engine: EngineFactory,
) -> None:
    ed = await engine()
    control_id, placer, _ = _ids()
    ack = await ed.send(order("NOT-REGISTERED", control_id, placer))
    assert ack.code == "AR"
    assert ack.segment("ERR")[2] == "MSH^1^3"
    assert await ed.referral_count(placer) == 0


async def test_order_cancelled_cancels_the_referral_with_its_event(
    engine: EngineFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
    cancel = order(ed.facility, control_id + "CA", placer, control="CA", visit=visit)
    assert (await ed.send(cancel)).code == "AA"
    cancelled = await ed.referral(placer)
    assert (cancelled.status.value, cancelled.cancel_reason) == ("cancelled", "no_longer_needed")
    events = [e for _, e in await _events(referral, kafka_topics, cancelled.referral_id)]
    assert [type(e.data) for e in events] == [ReferralCreated, ReferralCancelled]
    assert events[1].data.reason.value == "no_longer_needed"


async def test_a_cancelled_visit_cancels_its_referral_as_entered_in_error(
    engine: EngineFactory,
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
    assert (await ed.send(adt(ed.facility, control_id + "A11", "A11", visit=visit))).code == "AA"
    cancelled = await ed.referral(placer)
    assert (cancelled.status.value, cancelled.cancel_reason) == ("cancelled", "entered_in_error")


@pytest.fixture
async def coach_side(kafka_topics: str) -> AsyncIterator[KafkaBroker]:
    """Stands in for matching and notify: a coach accepts and arrives."""
    broker = make_broker(kafka_topics, client_id="stand-in-for-the-coach")
    async with broker:
        yield broker


async def _coach_arrives(broker: KafkaBroker, ed: Engine, referral_id: uuid.UUID) -> None:
    coach_id, offer_id = uuid.uuid4(), uuid.uuid4()
    # The two events travel on different topics, so only their times order the timeline:
    # accepted just after the referral was received, at the bedside just after that, both
    # before the discharge the test sends next.
    received = (await ed.runtime.service.get(ed.site, referral_id)).timeline[0].at
    accepted = received + timedelta(milliseconds=1)
    await send(broker, coach_assigned(referral_id, offer_id, coach_id, accepted))
    arrived_at = accepted + timedelta(milliseconds=1)
    await send(
        broker,
        coach_responded(referral_id, offer_id, coach_id, CoachResponse.ARRIVED, arrived_at),
    )

    async def arrived() -> bool:
        # Both steps, not the status alone: the arrival can be read before the acceptance.
        referral = await ed.runtime.service.get(ed.site, referral_id)
        steps = [step.step.value for step in referral.timeline]
        return steps == ["received", "accepted", "arrived"]

    await eventually(arrived, within=30, what="the coach's acceptance and arrival on the timeline")


async def test_a_discharge_before_the_coach_arrives_cancels_and_after_only_goes_on_the_timeline(
    engine: EngineFactory, coach_side: KafkaBroker
) -> None:
    ed = await engine()
    control_id, early, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, early, visit=visit))).code == "AA"
    assert (await ed.send(adt(ed.facility, control_id + "D", "A03", visit=visit))).code == "AA"
    left = await ed.referral(early)
    assert (left.status.value, left.cancel_reason) == ("cancelled", "patient_left")

    control_id, late, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, late, visit=visit))).code == "AA"
    seen = await ed.referral(late)
    await _coach_arrives(coach_side, ed, seen.referral_id)
    assert (await ed.send(adt(ed.facility, control_id + "D", "A03", visit=visit))).code == "AA"
    after = await ed.referral(late)
    assert after.status.value == "arrived"
    assert after.cancel_reason is None
    steps = [s.step.value for s in after.timeline]
    assert steps == ["received", "accepted", "arrived", "discharged"]

    # A03 again, then the EHR cleaning up its orders with CA: the coach is at the bedside,
    # so both are acknowledged and change nothing, and the discharge is on the timeline once.
    assert (await ed.send(adt(ed.facility, control_id + "D2", "A03", visit=visit))).code == "AA"
    cancel = order(ed.facility, control_id + "CA", late, control="CA", visit=visit)
    assert (await ed.send(cancel)).code == "AA"
    final = await ed.referral(late)
    assert (final.status.value, final.cancel_reason) == ("arrived", None)
    assert [s.step.value for s in final.timeline] == steps


async def test_a_bed_move_updates_the_location_of_the_visits_open_referral(
    engine: EngineFactory, referral: ReferralRuntime, kafka_topics: str
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
    _, other, other_visit = _ids()
    assert (await ed.send(order(ed.facility, control_id + "O", other, visit=other_visit))).code == (
        "AA"
    )
    # fresh34d: an A08 sent before the order itself (MSH-7 14:30 -05:00) moved the visit
    before_order = adt(
        ed.facility,
        control_id + "B",
        "A08",
        visit=visit,
        location="ED^TRIAGE^1",
        sent_at="20261130140000-0500",
    )
    early = await ed.send(before_order)
    assert (early.code, early.segment("ERR")[5]) == ("AA", "older_move")
    assert (await ed.referral(placer)).request.location == "ED 12 B"
    move = adt(ed.facility, control_id + "M", "A08", visit=visit, location="ED^HALL^3")
    assert (await ed.send(move)).code == "AA"
    moved = await ed.referral(placer)
    assert moved.request.location == "ED HALL 3"
    assert (await ed.referral(other)).request.location == "ED 12 B"
    events = [e for _, e in await _events(referral, kafka_topics, moved.referral_id)]
    assert [type(e.data) for e in events] == [ReferralCreated, ReferralUpdated]
    assert events[1].data.location == "ED HALL 3"

    # fresh34a: an A08 sent before that one, arriving after it (an engine's queue), moved the
    # coach back to the bed the patient had left. It is an AA with a warning, and no move.
    older = adt(
        ed.facility,
        control_id + "M0",
        "A08",
        visit=visit,
        location="ED^OLD^2",
        sent_at="20261130145000",
    )
    ack = await ed.send(older)
    assert ack.code == "AA"
    assert ack.segment("ERR")[5] == "older_move"
    assert (await ed.referral(placer)).request.location == "ED HALL 3"


async def test_other_messages_from_a_registered_sender_are_acknowledged_and_counted(
    engine: EngineFactory, referral: ReferralRuntime
) -> None:
    ed = await engine()
    control_id, _, visit = _ids()
    ack = await ed.send(adt(ed.facility, control_id, "A01", visit=visit))
    assert ack.code == "AA"
    metrics = (
        await httpx.AsyncClient(transport=httpx.ASGITransport(app=referral.app)).get(
            "http://referral/metrics"
        )
    ).text
    labels = f'message_type="other",outcome="ignored",site="{ed.site.site_id}"'
    assert f"handoff_hl7_messages_total{{{labels}}} 1.0" in metrics


async def _metrics(referral: ReferralRuntime) -> str:
    transport = httpx.ASGITransport(app=referral.app)
    async with httpx.AsyncClient(transport=transport) as client:
        return (await client.get("http://referral/metrics")).text


def _sample(metrics: str, name: str, labels: str) -> float:
    prefix = f"{name}{{{labels}}} "
    found = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(found[0][len(prefix) :]) if found else 0.0


@pytest.mark.parametrize("kind", ["ACK", "ORM", "ADT"])
async def test_a_message_type_without_a_trigger_event_is_acknowledged_and_counted(
    engine: EngineFactory, referral: ReferralRuntime, kind: str
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    ack = await ed.send(order(ed.facility, control_id, placer, kind=kind, visit=visit))
    assert (ack.code, ack.segment("MSA")[2]) == ("AA", control_id)
    assert await ed.referral_count(placer) == 0
    # The connection stays open: the next order is answered on it.
    control_id, placer, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
    labels = f'message_type="other",outcome="ignored",site="{ed.site.site_id}"'
    assert _sample(await _metrics(referral), "handoff_hl7_messages_total", labels) == 1.0


async def test_an_empty_msh_9_or_msh_10_is_ae_naming_it_counted_under_the_senders_site(
    engine: EngineFactory, referral: ReferralRuntime
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    no_type = await ed.send(order(ed.facility, control_id, placer, kind="", visit=visit))
    assert no_type.code == "AE"
    assert no_type.segment("ERR")[2] == "MSH^1^9"
    no_id = await ed.send(order(ed.facility, "", placer, visit=visit))
    assert no_id.code == "AE"
    assert no_id.segment("ERR")[2] == "MSH^1^10"
    assert await ed.referral_count(placer) == 0
    metrics = await _metrics(referral)
    site = ed.site.site_id
    unknown = f'message_type="unknown",outcome="error",site="{site}"'
    assert _sample(metrics, "handoff_hl7_messages_total", unknown) == 1.0
    order_type = f'message_type="ORM^O01",outcome="error",site="{site}"'
    assert _sample(metrics, "handoff_hl7_messages_total", order_type) == 1.0


async def test_two_messages_in_one_frame_are_refused_with_ae_and_neither_is_taken(
    engine: EngineFactory, referral: ReferralRuntime
) -> None:
    ed = await engine()
    first, second = _ids(), _ids()
    before = _sample(
        await _metrics(referral), "handoff_mllp_framing_errors_total", 'reason="several_messages"'
    )
    both = order(ed.facility, first[0], first[1], visit=first[2]) + order(
        ed.facility, second[0], second[1], visit=second[2]
    )
    # An engine that left out the end block between them sends the second behind a start
    # block: that is two messages as well, not one with a stray segment.
    glued = (
        order(ed.facility, first[0], first[1], visit=first[2])
        + b"\x0b"
        + order(ed.facility, second[0], second[1], visit=second[2])
    )
    for frame_with_two in (both, glued):
        ack = await ed.send(frame_with_two)
        assert ack.code == "AE"
        assert ack.segment("MSA")[2] == first[0]  # the control id the engine waits on
        assert "one message per frame" in ack.segment("MSA")[3]
        assert await ed.referral_count(first[1]) == 0
        assert await ed.referral_count(second[1]) == 0
    after = _sample(
        await _metrics(referral), "handoff_mllp_framing_errors_total", 'reason="several_messages"'
    )
    assert after == before + 2
    # Sent again one per frame, both are taken.
    for control_id, placer, visit in (first, second):
        assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
        assert await ed.referral_count(placer) == 1


async def test_a_cancel_or_update_of_an_unknown_order_or_visit_is_aa_with_a_warning(
    engine: EngineFactory, referral: ReferralRuntime
) -> None:
    """The engine must not resend it for ever (AA), and the site must hear that nothing was
    done (ERR-4 W naming it, MSA-3), and it is counted. A cancel of a known order or visit
    whose referral is already over is a plain AA."""
    ed = await engine()
    control_id, placer, visit = _ids()
    sent = [
        (order(ed.facility, control_id + "CA", placer, control="CA", visit=visit), "unknown_order"),
        *(
            (adt(ed.facility, f"{control_id}{trigger}", trigger, visit=visit), "unknown_visit")
            for trigger in ("A11", "A03", "A08")
        ),
    ]
    for message, code in sent:
        ack = await ed.send(message)
        assert ack.code == "AA"
        err = ack.segment("ERR")
        assert (err[2], err[3].split("^")[0], err[4], err[5]) == (
            "ORC^1^2" if code == "unknown_order" else "PV1^1^19",
            "204",
            "W",
            code,
        )
        assert "nothing was" in ack.segment("MSA")[3]
    metrics = await _metrics(referral)
    site = ed.site.site_id
    for kind, outcome, count in (
        ("ORM^O01", "unknown_order", 1.0),
        ("ADT^A11", "unknown_visit", 1.0),
        ("ADT^A03", "unknown_visit", 1.0),
        ("ADT^A08", "unknown_visit", 1.0),
    ):
        labels = f'message_type="{kind}",outcome="{outcome}",site="{site}"'
        assert _sample(metrics, "handoff_hl7_messages_total", labels) == count, labels
    assert await ed.referral_count(placer) == 0

    # Known, but over: the order was taken and cancelled; cancelling again is a plain AA.
    assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
    assert (await ed.send(adt(ed.facility, control_id + "X", "A11", visit=visit))).code == "AA"
    assert (await ed.referral(placer)).status.value == "cancelled"
    for message in (
        order(ed.facility, control_id + "CA2", placer, control="CA", visit=visit),
        adt(ed.facility, control_id + "A03B", "A03", visit=visit),
    ):
        ack = await ed.send(message)
        assert ack.code == "AA"
        assert "ERR|" not in ack.text


async def test_a_changed_order_under_a_used_placer_number_is_ae_naming_orc_2(
    engine: EngineFactory,
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
    changed = order(ed.facility, control_id + "B", placer, visit=visit, location="XX^1^1")
    ack = await ed.send(changed)
    assert ack.code == "AE"
    assert ack.segment("ERR")[2:4] == ["ORC^1^2", "205^Duplicate key identifier^HL70357"]
    assert "send changes as ADT\\S\\A08" in ack.segment("MSA")[3]  # ^ escaped, as HL7 does
    assert (await ed.referral(placer)).request.location == "ED 12 B"


async def test_an_over_long_location_is_cut_and_the_consult_taken(
    engine: EngineFactory, referral: ReferralRuntime
) -> None:
    ed = await engine()
    control_id, placer, visit = _ids()
    long = "EMERGENCYDEPARTMENTNORTHWING^ROOM12345678901234^BED-A-WINDOW"
    ack = await ed.send(order(ed.facility, control_id, placer, visit=visit, location=long))
    assert ack.code == "AA"
    taken = await ed.referral(placer)
    assert taken.request.location == "EMERGENCYDEPARTMENTNORTHWING ROOM1234567"
    metrics = await _metrics(referral)
    assert _sample(metrics, "handoff_referral_locations_cut_total", 'intake="hl7"') >= 1


async def test_many_engines_at_once_each_get_their_acks(engine: EngineFactory) -> None:
    engines = [await engine() for _ in range(8)]

    async def five_orders(ed: Engine) -> list[str]:
        codes = []
        for _ in range(5):
            control_id, placer, visit = _ids()
            codes.append((await ed.send(order(ed.facility, control_id, placer, visit=visit))).code)
        return codes

    results = await asyncio.gather(*(five_orders(ed) for ed in engines))
    assert [code for codes in results for code in codes] == ["AA"] * 40


async def test_no_pid_value_is_stored_in_any_table(
    engine: EngineFactory, referral: ReferralRuntime
) -> None:
    """Every row the messages wrote or changed, in every table of the referral schema, is
    free of PID's name, MRN and date of birth and of the visit number. Rows of other sites
    are left out: a REST referral keeps the ED's free-text notes, which name the same test
    patient."""
    ed = await engine()

    async def rows() -> dict[str, list[str]]:
        async with referral.pool.acquire() as connection:
            return await stored_rows(connection, SCHEMA, ed.site.site_id)

    before = await rows()
    control_id, placer, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
    assert (await ed.send(adt(ed.facility, control_id + "M", "A08", visit=visit))).code == "AA"
    cancel = order(ed.facility, control_id + "CA", placer, control="CA", visit=visit)
    assert (await ed.send(cancel)).code == "AA"
    written = written_since(before, await rows())
    # The referral, the message log and the visit link at least (the outbox drains).
    assert {"referrals", "timeline", "hl7_messages", "hl7_orders"} <= {
        table for table, lines in written.items() if lines
    }
    assert not leaks(written, [*PID_PHI, visit])


async def test_with_the_database_down_the_engine_gets_ar_and_then_aa_once_it_is_back(
    database_url: str,
) -> None:
    """A referral database of its own, which the test takes away and brings back."""
    url = await create_database(database_url)
    name = url.rsplit("/", 1)[1]
    await apply_migrations(url)
    pool = await create_pool(url, min_size=1, max_size=2)
    site = await _site_on(pool)
    facility = f"F{uuid.uuid4().hex[:8].upper()}"
    async with pool.acquire() as db:
        await hl7_store.save_interface(
            db, Interface.model_validate(interface(site.site_id, facility))
        )
    intake = Hl7Intake(ReferralService(pool, Outbox(SCHEMA), KeyCache(url)))
    server = MllpServer(intake.receive)
    port = await server.start("127.0.0.1", 0)
    engine_side = await Connection.open(port)
    admin = await asyncpg.connect(database_url)
    control_id, placer, visit = _ids()
    message = order(facility, control_id, placer, visit=visit)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        down = await engine_side.send(message)
        assert down.code == "AR", down.text
        assert down.segment("ERR")[3].startswith("207^")

        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

        async def accepted() -> Ack | None:
            ack = await engine_side.send(message)
            return ack if ack.code == "AA" else None

        await eventually(accepted, within=30, what="AA once the database is back", interval=0.5)
        async with pool.acquire() as db:
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM referral.referrals WHERE external_id = $1", placer
                )
                == 1
            )
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await engine_side.close()
        await server.close()
        await pool.close()


async def _site_on(pool: asyncpg.Pool) -> Site:
    suffix = uuid.uuid4().hex[:8]
    site = Site(f"md-ed-{suffix}", f"Test ED {suffix}", f"ED {suffix}", "MD", "America/New_York")
    async with pool.acquire() as connection:
        await store.add_site(connection, site)
    return site


@pytest.fixture(scope="module")
def mllp_process(
    referral_database: str, kafka_topics: str
) -> Iterator[tuple[int, str, dict[str, str], Path]]:
    """`handoff referral mllp serve` as its own process; yields its MLLP port, HTTP URL, env
    and log file."""
    mllp, http = free_ports(2)
    env = {**os.environ, "DATABASE_URL": referral_database, "KAFKA_BOOTSTRAP_SERVERS": kafka_topics}
    log = SERVICE_LOGS / f"referral-mllp-{uuid.uuid4().hex[:6]}.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*HANDOFF, "referral", "mllp", "serve", "--port", str(mllp), "--http-port", str(http)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield mllp, f"http://127.0.0.1:{http}", env, log
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_the_listener_runs_as_its_own_process_with_interfaces_from_the_cli(
    mllp_process: tuple[int, str, dict[str, str], Path],
    referral: ReferralRuntime,
    kafka_topics: str,
    tmp_path: Path,
) -> None:
    port, url, env, log = mllp_process
    site, _, _ = await register_site(referral)
    facility = f"F{uuid.uuid4().hex[:8].upper()}"
    mapping = tmp_path / "interface.json"
    mapping.write_text(json.dumps(interface(site.site_id, facility)))

    def handoff(*args: str) -> str:
        result = subprocess.run(
            [*HANDOFF, "referral", "interface", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "added" in handoff("add", str(mapping))
    assert f"{site.site_id}\tEPIC\t{facility}\tPRC-PEER" in handoff("list", "--site", site.site_id)

    async with httpx.AsyncClient(base_url=url) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, within=60, what="the MLLP process ready")
        connection = await Connection.open(port)
        control_id, placer, visit = _ids()
        try:
            ack = await connection.send(order(facility, control_id, placer, visit=visit))
            assert ack.code == "AA", ack.text
        finally:
            await connection.close()
        metrics = (await client.get("/metrics")).text
    assert f'outcome="created",site="{site.site_id}"' in metrics
    async with referral.pool.acquire() as db:
        found = await store.find_by_external_id(db, site.site_id, placer)
    assert found is not None
    [(_, envelope)] = await _events(referral, kafka_topics, found[0])
    assert isinstance(envelope.data, ReferralCreated)

    assert "removed" in handoff("remove", "--application", "EPIC", "--facility", facility)
    connection = await Connection.open(port)
    try:
        control_id, placer, visit = _ids()
        ack = await connection.send(order(facility, control_id, placer, visit=visit))
        assert ack.code == "AR", ack.text
    finally:
        await connection.close()

    async def rejection_logged() -> dict[str, Any] | None:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        return next((line for line in lines if line["correlation_id"] == f"hl7:{control_id}"), None)

    logged = await eventually(rejection_logged, within=10, what="the rejection's log line")
    assert logged["message"] == "HL7 message from an unregistered sender"


async def test_a_sender_is_not_moved_to_another_site_without_move(
    referral: ReferralRuntime, referral_database: str, tmp_path: Path
) -> None:
    # A copied interface file with only site_id changed: refused, naming the sender's site,
    # so one hospital's orders never silently become another's referrals.
    mercy, _, _ = await register_site(referral)
    bayview, _, _ = await register_site(referral)
    facility = f"F{uuid.uuid4().hex[:8].upper()}"
    own, copied = tmp_path / "own.json", tmp_path / "copied.json"
    own.write_text(json.dumps(interface(mercy.site_id, facility)))
    copied.write_text(json.dumps(interface(bayview.site_id, facility)))
    env = {**os.environ, "DATABASE_URL": referral_database}

    def handoff(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HANDOFF, "referral", "interface", "add", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def site_of_sender() -> str:
        async with referral.pool.acquire() as connection:
            sender = await hl7_store.find_sender(connection, "EPIC", facility, "none")
        assert sender is not None
        return sender.site.site_id

    assert handoff(str(own)).returncode == 0
    refused = handoff(str(copied))
    assert refused.returncode == 3, refused.stderr
    assert f"belongs to site {mercy.site_id}" in refused.stderr
    assert "--move" in refused.stderr
    assert await site_of_sender() == mercy.site_id
    # The same site again is an ordinary update.
    again = handoff(str(own))
    assert (again.returncode, again.stdout.split()[-1]) == (0, "updated"), again.stderr
    moved = handoff(str(copied), "--move")
    assert moved.returncode == 0, moved.stderr
    assert f"moved from {mercy.site_id} to {bayview.site_id}" in moved.stdout
    assert await site_of_sender() == bayview.site_id


async def test_silent_and_half_sent_connections_are_closed_and_counted(
    referral: ReferralRuntime,
) -> None:
    # A listener of the test's own with short budgets: 1 s idle, 0.5 s for a begun frame.
    server = MllpServer(Hl7Intake(referral.service).receive, idle_seconds=1.0, frame_seconds=0.5)
    port = await server.start("127.0.0.1", 0)
    site, _, _ = await register_site(referral)
    facility = f"F{uuid.uuid4().hex[:10].upper()}"
    async with referral.pool.acquire() as connection:
        await hl7_store.save_interface(
            connection, Interface.model_validate(interface(site.site_id, facility))
        )
    metric = "handoff_mllp_connections_timed_out_total"
    before = await _metrics(referral)

    async def closed_by_handoff(reader: asyncio.StreamReader) -> bytes:
        # An end of stream within the deadline: the listener hung up, not the test.
        return await asyncio.wait_for(reader.read(), timeout=10)

    try:
        # Half a frame, then nothing (a stuck engine): closed without an ACK.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x0bMSH|^~\\&|EPIC|" + facility.encode())
        await writer.drain()
        assert await closed_by_handoff(reader) == b""
        writer.close()
        # A whole message is answered; then silence for longer than the idle budget closes it.
        engine_side = await Connection.open(port)
        control_id, placer, visit = _ids()
        ack = await engine_side.send(order(facility, control_id, placer, visit=visit))
        assert ack.code == "AA", ack.text
        assert await closed_by_handoff(engine_side.reader) == b""
        await engine_side.close()
    finally:
        await server.close()
    after = await _metrics(referral)
    for phase in ("partial_frame", "idle"):
        label = f'phase="{phase}"'
        assert _sample(after, metric, label) == _sample(before, metric, label) + 1, phase


async def test_a_byte_order_mark_and_other_delimiters_are_taken_and_answered_in_kind(
    engine: EngineFactory,
) -> None:
    ed = await engine()
    # A Windows engine's UTF-8 BOM before MSH: taken, and the ACK ties to its MSH-10.
    control_id, placer, visit = _ids()
    ack = await ed.send(b"\xef\xbb\xbf" + order(ed.facility, control_id, placer, visit=visit))
    assert (ack.code, ack.segment("MSA")[2]) == ("AA", control_id), ack.text
    assert (await ed.referral(placer)).request.location == "ED 12 B"
    # `#` as the field separator: the ACK comes back in `#`, MSH-9 as v2.3 has it.
    control_id, placer, visit = _ids()
    hashed = order(ed.facility, control_id, placer, visit=visit).replace(b"|", b"#")
    msh, msa = (await ed.send(hashed)).text.split("\r")[:2]
    assert msh.startswith("MSH#^~\\&#HANDOFF#")
    assert msh.split("#")[8] == "ACK^O01"
    assert msa == f"MSA#AA#{control_id}"
    assert await ed.referral_count(placer) == 1


async def test_framing_garbage_is_skipped_and_an_oversized_frame_closes_the_connection(
    engine: EngineFactory, mllp_port: int, referral: ReferralRuntime
) -> None:
    ed = await engine()
    unframed = 'reason="no_start_block"'
    before = _sample(await _metrics(referral), "handoff_mllp_framing_errors_total", unframed)
    # Unframed bytes, then the engine hangs up: counted, and the listener carries on.
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    async def counted() -> bool:
        metrics = await _metrics(referral)
        return _sample(metrics, "handoff_mllp_framing_errors_total", unframed) == before + 1

    await eventually(counted, within=10, what="the unframed bytes to be counted")
    # A frame ending 0x1C without its 0x0D is answered, not left waiting.
    control_id, placer, visit = _ids()
    ed.connection.writer.write(b"\x0b" + order(ed.facility, control_id, placer, visit=visit))
    ed.connection.writer.write(b"\x1c")
    answer = await asyncio.wait_for(ed.connection.reader.readuntil(END_BLOCK), timeout=30)
    assert f"MSA|AA|{control_id}" in answer.decode()
    control_id, placer, visit = _ids()
    # Bytes with no start block before the end block are dropped; the next frame is read.
    ed.connection.writer.write(b"noise" + END_BLOCK)
    ack = await ed.send(order(ed.facility, control_id, placer, visit=visit))
    assert (ack.code, ack.segment("MSA")[2]) == ("AA", control_id)
    # Garbage inside a frame is still answered, AE, so the engine does not wait forever.
    assert (await ed.send(b"hello")).code == "AE"

    reader, writer = await asyncio.open_connection("127.0.0.1", mllp_port)

    async def flood() -> bytes:
        writer.write(b"\x0b" + b"A" * (2 * 1024 * 1024))
        await writer.drain()
        return await reader.read()

    # Closed by Handoff: an end of stream, or a reset since the rest was never read.
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(flood(), timeout=30) == b""
    writer.close()
    # The listener carries on for everyone else.
    control_id, placer, visit = _ids()
    assert (await ed.send(order(ed.facility, control_id, placer, visit=visit))).code == "AA"
