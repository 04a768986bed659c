"""HL7 v2 messages into referrals: one message in, one ACK out.

The referral is made by the same `ReferralService.submit` the REST API calls, so the
referral, its first timeline step and its ReferralCreated commit together before the
`AA` is sent. A crash between that commit and recording the control id loses nothing: the
engine resends, the placer order number finds the referral, and the answer is `AA` again.
"""

import hashlib
import logging
import re
import time
import traceback
from uuid import UUID

import asyncpg
import hl7

from handoff_platform.logs import correlation_id_var
from handoff_platform.outbox import Outbox
from handoff_platform.transient import is_transient_database_error
from handoff_referral import SOURCE
from handoff_referral.adapters import hl7_store
from handoff_referral.adapters import postgres as store
from handoff_referral.domain.hl7 import (
    CANCEL_REASONS,
    OLDER_MOVE,
    UNKNOWN_ORDER,
    UNKNOWN_VISIT,
    AckCode,
    Discharged,
    ErrorCode,
    Header,
    Intent,
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
    read_header,
    read_message,
)
from handoff_referral.domain.referral import Site
from handoff_referral.domain.status import FINAL, CancelRefused, Status, Step
from handoff_referral.metrics import (
    HL7_ACK_SECONDS,
    HL7_MESSAGES,
    LOCATIONS_CUT,
    MLLP_FRAMING_ERRORS,
    REFERRAL_STEPS,
)
from handoff_referral.service import ExternalIdConflict, ReferralService
from handoff_schemas import Envelope
from handoff_schemas.events import ReferralUpdated
from handoff_schemas.vocabulary import CancelReason

log = logging.getLogger(__name__)

HANDLED_TYPES = frozenset({"ORM^O01", "OMG^O19", "ADT^A03", "ADT^A08", "ADT^A11"})
_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,60}$")


def message_digest(raw: bytes) -> bytes:
    """SHA-256 of the message with its line endings made `\\r`: a resend over another engine
    route, with `\\n` endings, is the same message."""
    normalised = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")
    return hashlib.sha256(normalised).digest()


class Hl7Intake:
    """Answers HL7 v2 messages for the referral service; see the module docstring."""

    def __init__(self, service: ReferralService) -> None:
        self.service = service

    @property
    def pool(self) -> asyncpg.Pool:
        return self.service.pool

    @property
    def outbox(self) -> Outbox:
        return self.service.outbox

    async def receive(self, raw: bytes) -> bytes:
        """The ACK for one message (`raw`: the bytes between MLLP's start and end blocks).
        Never raises: every failure is an `AE` (the content) or an `AR` (try again).
        Log lines carry `hl7:<MSH-10>` as their correlation id once MSH is read."""
        token = correlation_id_var.set(None)
        try:
            return await self._answer(raw)
        finally:
            correlation_id_var.reset(token)

    async def _answer(self, raw: bytes) -> bytes:
        started = time.perf_counter()
        message: hl7.Message | None = None
        site, kind, outcome = "unregistered", "unknown", "rejected"
        ack_id = f"ACK{time.time_ns()}"[:20]
        try:
            message = parse(raw)
            header = read_header(message)
            kind = header.message_type if header.message_type in HANDLED_TYPES else "other"
            if not header.message_type:
                kind = "unknown"
            correlation_id_var.set(_correlation_id(header) or "hl7")
            async with self.pool.acquire() as connection:
                sender = await hl7_store.find_sender(
                    connection,
                    header.sending_application,
                    header.sending_facility,
                    header.control_id,
                )
            if sender is None:
                ack = build_ack(message, AckCode.REJECTED, _UNKNOWN_SENDER, ack_id)
                log.warning("HL7 message from an unregistered sender", extra={"type": kind})
            else:
                site = sender.site.site_id
                check_header(header)
                outcome, warning = await self._handle(message, header, sender, raw)
                ack = build_ack(message, AckCode.ACCEPTED, warning, ack_id)
                if warning is not None:
                    log.info(
                        "HL7 message accepted with a warning",
                        extra={"site_id": site, "type": kind, "warning": outcome},
                    )
        except SeveralMessages as error:
            # Answering only the first would lose the others without a trace. The ACK echoes
            # the first message's control id, which is what the engine waits for.
            outcome = "error"
            ack = build_ack(error.header or message, AckCode.ERROR, error, ack_id)
            MLLP_FRAMING_ERRORS.labels("several_messages").inc()
            log.warning("HL7 frame with more than one message refused", extra={"type": kind})
        except MessageError as error:
            outcome = "error"
            ack = build_ack(message or error.header, AckCode.ERROR, error, ack_id)
            log.info(
                "HL7 message refused",
                extra={"site_id": site, "type": kind, "location": error.location},
            )
        except Exception as error:  # the engine must get an answer; AR makes it retry
            outcome = "rejected"
            if is_transient_database_error(error):
                log.warning("HL7 message rejected: database unavailable", extra={"type": kind})
            else:
                # The frames, not the exception's text: that can quote the message (PHI).
                where = "".join(traceback.format_tb(error.__traceback__, limit=-4))
                log.error(
                    "HL7 message rejected: internal error",
                    extra={"type": kind, "error": type(error).__name__, "traceback": where},
                )
            ack = build_ack(message, AckCode.REJECTED, _TRY_AGAIN, ack_id)
        HL7_MESSAGES.labels(site, kind, outcome).inc()
        HL7_ACK_SECONDS.labels(_ack_code(ack)).observe(time.perf_counter() - started)
        return ack

    async def _handle(
        self, message: hl7.Message, header: Header, sender: hl7_store.Sender, raw: bytes
    ) -> tuple[str, MessageError | None]:
        """The outcome (a metric label) and the warning the AA carries, if any."""
        digest = message_digest(raw)
        if sender.acknowledged_sha256 is not None:
            if sender.acknowledged_sha256 != digest:
                raise MessageError(
                    "MSH^1^10",
                    ErrorCode.DUPLICATE_KEY,
                    "MSH-10 control id was already used for another message",
                )
            return "replayed", None
        site = sender.site
        intent = read_message(message, header, sender.interface)
        outcome, referral_id = await self._apply(intent, site, header)
        # Acknowledged AA, so the engine does not resend it for ever, with a warning saying
        # nothing was done: an order or visit Handoff never heard of (sent to the wrong
        # interface, or before it was registered) is for the site to look into.
        warning = {
            "unknown_order": UNKNOWN_ORDER,
            "unknown_visit": UNKNOWN_VISIT,
            "older_move": OLDER_MOVE,
        }.get(outcome)
        # The control id and the visit link commit together, after the referral: a crash
        # before leaves the order to its resend, which finds the referral by placer
        # number and links it then.
        visit = (
            (site.site_id, intent.visit_key)
            if isinstance(intent, NewOrder) and intent.visit_key is not None
            else None
        )
        async with self.pool.acquire() as connection:
            await hl7_store.record_message(
                connection,
                header.sending_application,
                header.sending_facility,
                header.control_id,
                digest,
                header.message_type,
                referral_id,
                self.service.clock(),
                visit,
                intent.sent_at if isinstance(intent, NewOrder) else None,
            )
        return outcome, warning

    async def _apply(self, intent: Intent, site: Site, header: Header) -> tuple[str, UUID | None]:
        if isinstance(intent, NewOrder):
            return await self._order(intent, site, header)
        if isinstance(intent, OrderCancelled):
            async with self.pool.acquire() as connection:
                found = await store.find_by_external_id(
                    connection, site.site_id, intent.placer_number
                )
            if found is None:
                return "unknown_order", None
            cancelled = await self._cancel(site, found[0], CANCEL_REASONS[OrderCancelled])
            return ("cancelled" if cancelled else "ignored"), found[0]
        if isinstance(intent, VisitCancelled | Discharged):
            return await self._visit_ended(intent, site), None
        if isinstance(intent, LocationChanged):
            return await self._move(intent, site), None
        assert isinstance(intent, NotHandled)
        log.info("HL7 message ignored", extra={"site_id": site.site_id})
        return "ignored", None

    async def _order(self, order: NewOrder, site: Site, header: Header) -> tuple[str, UUID | None]:
        try:
            referral, created = await self.service.submit(
                site, order.request, _correlation_id(header)
            )
            referral_id = referral.referral_id
        except ExternalIdConflict:
            # The same placer order number with other content (a resend with another MSH-7
            # or MSH-10 is not other content): the first order stands, and the engine must
            # hear that the correction was not taken, as REST and FHIR answer 409.
            raise MessageError(
                "ORC^1^2",
                ErrorCode.DUPLICATE_KEY,
                "placer number already used for a different order; send changes as ADT^A08 "
                "or cancel with ORC-1 CA",
            ) from None
        if order.location_cut:
            _location_cut(referral_id)
        return ("created" if created else "replayed"), referral_id

    async def _cancel(self, site: Site, referral_id: UUID, reason: CancelReason) -> bool:
        try:
            before = await self.service.get(site, referral_id)
            if before.status in FINAL:
                return False
            await self.service.cancel(site, referral_id, reason)
        except CancelRefused as refused:
            log.info(
                "HL7 cancel refused: referral unchanged",
                extra={"referral_id": str(referral_id), "status": refused.status.value},
            )
            return False
        return True

    async def _visit_ended(self, intent: VisitCancelled | Discharged, site: Site) -> str:
        """A11 cancels the visit's open referrals; A03 too, except that a referral whose
        coach has arrived only records the discharge on its timeline."""
        async with self.pool.acquire() as connection:
            referral_ids = await hl7_store.open_referrals_of_visit(
                connection, site.site_id, intent.visit_key
            )
        if not referral_ids and not await self._visit_known(site, intent.visit_key):
            return "unknown_visit"
        outcome = "ignored"
        for referral_id in referral_ids:
            if isinstance(intent, Discharged) and await self._discharged_after_arrival(referral_id):
                outcome = "discharged"
            elif await self._cancel(site, referral_id, CANCEL_REASONS[type(intent)]):
                outcome = "cancelled"
        return outcome

    async def _visit_known(self, site: Site, visit_key: bytes) -> bool:
        async with self.pool.acquire() as connection:
            return await hl7_store.visit_known(connection, site.site_id, visit_key)

    async def _discharged_after_arrival(self, referral_id: UUID) -> bool:
        async with self.outbox.transaction(self.pool) as connection:
            locked = await store.lock_status(connection, referral_id)
            if locked is None or locked[1] is not Status.ARRIVED:
                return False
            if await hl7_store.has_step(connection, referral_id, Step.DISCHARGED):
                return True  # A03 again: the discharge is on the timeline once
            now = self.service.clock()
            await store.record_step(
                connection, referral_id, Step.DISCHARGED, now, Status.ARRIVED, now
            )
        REFERRAL_STEPS.labels(locked[0], Step.DISCHARGED.value).inc()
        log.info("referral step", extra={"referral_id": str(referral_id), "step": "discharged"})
        return True

    async def _move(self, intent: LocationChanged, site: Site) -> str:
        """The visit's open referrals move to the new bed: stored, and ReferralUpdated."""
        async with self.pool.acquire() as connection:
            referral_ids = await hl7_store.open_referrals_of_visit(
                connection, site.site_id, intent.visit_key
            )
        if not referral_ids and not await self._visit_known(site, intent.visit_key):
            return "unknown_visit"
        outcome = "ignored"
        for referral_id in referral_ids:
            async with self.outbox.transaction(self.pool) as connection:
                referral = await store.get_referral(
                    connection, site.site_id, referral_id, for_update=True
                )
                if referral is None or referral.status in FINAL:
                    continue
                now = self.service.clock()
                moved = await hl7_store.set_location(
                    connection, referral_id, intent.location, now, intent.sent_at
                )
                if moved == "older" and outcome == "ignored":
                    outcome = "older_move"
                if moved != "moved":
                    continue
                event = ReferralUpdated(
                    referral_id=referral_id, location=intent.location, updated_at=now
                )
                await self.outbox.put(
                    connection,
                    Envelope.wrap(event, source=SOURCE, correlation_id=referral.correlation_id),
                )
            outcome = "location_updated"
            log.info("referral moved", extra={"referral_id": str(referral_id)})
            if intent.location_cut:
                _location_cut(referral_id)
        return outcome


_UNKNOWN_SENDER = MessageError(
    "MSH^1^3",
    ErrorCode.TABLE_VALUE_NOT_FOUND,
    "no interface is registered for this MSH-3 sending application and MSH-4 facility",
)
_TRY_AGAIN = MessageError(
    "MSH^1^10", ErrorCode.INTERNAL_ERROR, "Handoff cannot take messages right now; resend"
)


def _correlation_id(header: Header) -> str | None:
    """`hl7:<control id>` when the control id is safe in a log line, else none (the
    referral id stands in)."""
    candidate = f"hl7:{header.control_id}"
    return candidate if _CORRELATION.match(candidate) else None


def _location_cut(referral_id: UUID) -> None:
    LOCATIONS_CUT.labels("hl7").inc()
    log.warning(
        "PV1-3 location over 40 characters: cut to 40", extra={"referral_id": str(referral_id)}
    )


def _ack_code(ack: bytes) -> str:
    """MSA-1 of an ACK build_ack wrote: the two bytes after `\rMSA` and the field separator,
    whichever the sender's (the ACK answers in its delimiters)."""
    start = ack.index(b"\rMSA") + 5
    return ack[start : start + 2].decode()
