"""The notify service's use cases: each one transaction, with its outbox events and timers.

Dispatch events become queued messages; the delivery worker (delivery.py) hands
them to providers between two of these transactions; coaches' answers, from the
link, an SMS reply or a keypad, become CoachResponded events exactly once.
"""

import logging
import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import asyncpg

from handoff_notify import CHANNEL_FALLBACK, SCHEMA, SOURCE, THROTTLE_ENDS, metrics
from handoff_notify.adapters import notices_store as notices
from handoff_notify.adapters import pages_store as store
from handoff_notify.adapters import reminders_store as reminders
from handoff_notify.adapters.pages_store import (
    BlockedMethod,
    EarlyReport,
    MessageRecord,
    MethodState,
    OfferRecord,
    PhoneOffer,
)
from handoff_notify.adapters.providers import Outgoing
from handoff_notify.domain import content
from handoff_notify.domain.content import Content, MessageKind, OpenOffer
from handoff_notify.domain.delivery import (
    Accepted,
    Ambiguous,
    Found,
    LookupOutcome,
    MarkSent,
    MessageState,
    NotFound,
    Permanent,
    Reconcile,
    ReportOutcome,
    RetryIn,
    SendOutcome,
    Transient,
    Unknowable,
    after_lookup,
    after_report,
    after_send,
    coach_unreachable,
    next_contact,
)
from handoff_notify.domain.links import LinkSigner
from handoff_notify.domain.offer import OfferState
from handoff_notify.domain.replies import (
    Answer,
    Keyword,
    OffUntil,
    ReplyReading,
    SeveralCodes,
    Unclear,
    read_reply,
)
from handoff_notify.domain.throttle import (
    RecentSends,
    Refuse,
    plan_notices,
    slot_frees_at,
    throttle,
)
from handoff_notify.settings import NotifySettings
from handoff_platform import audit as audit_log
from handoff_platform.audit import Accessor, ActorKind, Purpose
from handoff_platform.database import Connection
from handoff_platform.links import FOLLOW_UP_LINK, VISIT_LINK
from handoff_platform.links import LinkSigner as RecordSigner
from handoff_platform.logs import correlation
from handoff_platform.outbox import Outbox
from handoff_platform.timers import Timer, Timers
from handoff_schemas import Envelope, EventPayload
from handoff_schemas.envelope import utc_now
from handoff_schemas.events import (
    CoachAssigned,
    CoachAvailabilityChanged,
    CoachPhonesChanged,
    CoachResponded,
    ContactMethodReachabilityChanged,
    FollowUpAssigned,
    FollowUpAttempted,
    FollowUpConsentRevoked,
    OfferMade,
    OfferWithdrawn,
    PageDelivered,
    PageFailed,
    PageSent,
    ReferralCancelled,
    ReferralUnassigned,
    ReferralUpdated,
)
from handoff_schemas.vocabulary import (
    OFFER_CEILING_FREED,
    OFFER_CEILING_REACHED,
    Channel,
    CoachResponse,
    PageFailure,
    ResponseVia,
    WithdrawReason,
)

log = logging.getLogger(__name__)

# What a coach's number looks like (Twilio's `From` for a phone): anything else is no coach.
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")

# The `finding` label of handoff_page_sends_reconciled_total, as the runbook names them.
FINDINGS = {Found: "found", NotFound: "not_found", Unknowable: "unknowable"}

Wake = Callable[[], None]
_Text = TypeVar("_Text", str, None)

# Channels whose answers reach us (SMS replies, keypad presses); email and webhooks have
# only the link.
_REPLIES_READ = (Channel.SMS, Channel.VOICE)

# Withdrawals the coach is told of; not_contacted and unreachable ones reached nobody.
_TOLD = (WithdrawReason.FILLED, WithdrawReason.CANCELLED, WithdrawReason.AT_CAPACITY)
_STILL_SHOWN = (OfferState.OPEN, OfferState.ACCEPTED, OfferState.ASSIGNED, OfferState.ARRIVED)
"""Offers whose page the coach may still act on: an ED's change to the referral shows there."""

# A delivery report that beat its send's response is kept this long for the provider's
# id to be stored. The id lands within the provider timeout, or at the latest when the
# lost send is reconciled after its deadline: minutes. What waits longer is not ours.
EARLY_REPORTS_KEPT_SECONDS = 3600.0

# A reminder held back by its destination's flood ceiling looks again this often: it is
# due within its window (days), so a minute costs nothing.
THROTTLED_REMINDER_RETRY_SECONDS = 60.0

# A text from a coach's phone within this long of a follow-up reminder to it, with no
# offer open, is answered with the reminder's link (a reminder takes no reply).
REMINDER_REPLIES_READ_FOR = timedelta(days=2)


class NotifyService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        timers: Timers,
        settings: NotifySettings,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.pool = pool
        self.outbox = outbox
        self.timers = timers
        self.settings = settings
        self.signer = LinkSigner(settings.notify_link_secret.get_secret_value())
        # The referral service's pages: the visit record (the accepted offer) and the
        # follow-up attempt (issue #16), signed with the secret that service checks.
        follow_up_secret = settings.follow_up_link_secret
        self.visit_signer: RecordSigner | None = None
        self.follow_up_signer: RecordSigner | None = None
        if follow_up_secret is not None:
            self.visit_signer = RecordSigner(follow_up_secret.get_secret_value(), VISIT_LINK)
            self.follow_up_signer = RecordSigner(
                follow_up_secret.get_secret_value(), FOLLOW_UP_LINK
            )
        self.clock = clock
        self.wake_delivery: Wake = lambda: None  # set by the delivery worker
        # A notice's call takes no answer: a keypad press there is told none was recorded.
        self._no_answer_url = f"{settings.notify_public_url.rstrip('/')}/v1/twilio/voice/-"

    # Links

    def link(self, offer_id: UUID) -> str:
        token = self.signer.token(offer_id)
        return f"{self.settings.notify_public_url.rstrip('/')}/p/{token}"

    def answer_url(self, offer_id: UUID) -> str:
        token = self.signer.token(offer_id)
        return f"{self.settings.notify_public_url.rstrip('/')}/v1/twilio/voice/{token}"

    def visit_link(self, offer_id: UUID) -> str | None:
        """The referral service's visit record for an accepted offer (/v/), or None when
        FOLLOW_UP_LINK_SECRET is not set."""
        if self.visit_signer is None:
            return None
        base = self.settings.referral_public_url.rstrip("/")
        return f"{base}/v/{self.visit_signer.token(offer_id)}"

    def follow_up_link(self, assignment_id: UUID) -> str | None:
        """The referral service's follow-up page for an assignment (/f/), or None when
        FOLLOW_UP_LINK_SECRET is not set."""
        if self.follow_up_signer is None:
            return None
        base = self.settings.referral_public_url.rstrip("/")
        return f"{base}/f/{self.follow_up_signer.token(assignment_id)}"

    # Dispatch events (Kafka consumers)

    async def offer_made(self, connection: Connection, event: Envelope[Any]) -> None:
        data: OfferMade = event.data
        await store.lock_referral(connection, data.referral_id)
        if not await store.save_offer(connection, data, event.correlationid, event.time):
            return
        # Matching may have made the offer from facts older than a change notify heard
        # already (fresh33c: a move sent before the offer existed never reached the page).
        if (update := await store.referral_update(connection, data.referral_id)) is not None:
            record = await store.offer(connection, data.offer_id)
            assert record is not None  # saved above, in this transaction
            await self._show_update(connection, record, update)
        phones = [c.destination for c in data.contacts if c.channel in (Channel.SMS, Channel.VOICE)]
        await store.lock_availability(connection, phones, data.coach_id)
        if await store.coach_is_off(connection, data.coach_id, phones, self.clock()):
            # Made as the coach texted OFF, before matching heard of it (fresh34c: paged
            # 60 ms after the OFF, and held for the whole answer time): passed on at once.
            record = await store.offer(connection, data.offer_id, lock=True)
            assert record is not None  # saved above, in this transaction
            await self._answer(connection, record, CoachResponse.DECLINED, ResponseVia.SMS_REPLY)
            return
        if not data.contacts:
            log.warning("offer has no contact methods to page", extra=_ids(data.offer_id))
            return
        await store.add_message(
            connection, uuid4(), data.offer_id, MessageKind.OFFER, 0, data.contacts[0], self.clock()
        )

    async def offer_withdrawn(self, connection: Connection, event: Envelope[Any]) -> None:
        data: OfferWithdrawn = event.data
        record = await store.offer(connection, data.offer_id, lock=True)
        if record is None:
            return
        record.coach_offer.withdraw(data.reason)
        await self._offer_settled(connection, record)
        if data.reason in _TOLD:
            await self._follow_up(connection, record, MessageKind.WITHDRAWN)

    async def coach_assigned(self, connection: Connection, event: Envelope[Any]) -> None:
        """Matching assigned the coach: confirm it to them. If the ED cancelled meanwhile
        (matching read the coach's yes before the cancel), the coach is told it was
        cancelled instead, never confirmed for a patient who is gone (fresh33)."""
        data: CoachAssigned = event.data
        await notices.record_outcome(connection, data.referral_id, "assigned", data.assigned_at)
        record = await store.offer(connection, data.offer_id, lock=True)
        if record is None:
            return
        record.coach_offer.assign(data.arrival_deadline)
        # Read after the offer's lock: a cancel committed before it is seen here, and one
        # not yet committed finds this assignment under the same lock (referral_cancelled).
        if await store.was_cancelled(connection, data.referral_id):
            record.coach_offer.cancel_held()
            await self._offer_settled(connection, record)
            await self._follow_up(connection, record, MessageKind.WITHDRAWN)
            return
        await self._offer_settled(connection, record)
        await self._follow_up(connection, record, MessageKind.ASSIGNED)

    async def referral_unassigned(self, connection: Connection, event: Envelope[Any]) -> None:
        """Nobody took the referral: one short notice to each of the site's supervisors."""
        data: ReferralUnassigned = event.data
        await notices.add(connection, event.id, event.correlationid, data)

    async def referral_cancelled(self, connection: Connection, event: Envelope[Any]) -> None:
        """The ED cancelled the referral: a coach who holds it (assigned, or at the bedside)
        is texted that it was cancelled and their page says so (matching withdraws only open
        offers, and tells those coaches through OfferWithdrawn); a supervisor's notice about
        it not yet sent (held by the quarter-hour limit, retried, or due at a restart) is
        dropped, not sent."""
        data: ReferralCancelled = event.data
        await notices.record_outcome(connection, data.referral_id, "cancelled", data.cancelled_at)
        await store.remember_cancelled(connection, data.referral_id, data.cancelled_at)
        for record in await store.offers_of_referral(connection, data.referral_id):
            if record.coach_offer.cancel_held():
                await self._offer_settled(connection, record)
                await self._follow_up(connection, record, MessageKind.WITHDRAWN)

    async def referral_updated(self, connection: Connection, event: Envelope[Any]) -> None:
        """The ED changed the referral (a move to another bed, HL7 ADT^A08; a new urgency,
        number or consent): the page of every offer not yet over shows it from now on
        (fresh33b: a coach on the way read the bed the patient had left). No text is sent:
        the page is where the coach reads where to go."""
        data: ReferralUpdated = event.data
        await store.lock_referral(connection, data.referral_id)
        merged = await store.remember_update(connection, data)
        for record in await store.offers_of_referral(connection, data.referral_id):
            await self._show_update(connection, record, merged)

    async def _show_update(
        self, connection: Connection, record: OfferRecord, update: ReferralUpdated
    ) -> None:
        """The offer's page shows the ED's changes in `update`, unless the offer is over."""
        if record.coach_offer.state not in _STILL_SHOWN:
            return
        changes = {
            name: value
            for name in ("location", "callback_phone", "consent")
            if (value := getattr(update, name)) is not None
        }
        briefing = record.briefing.model_copy(update=changes)
        await store.update_briefing(
            connection, record.offer_id, briefing, update.urgency or record.urgency
        )

    async def follow_up_assigned(self, connection: Connection, event: Envelope[Any]) -> None:
        """A follow-up attempt was given to a coach: a reminder to each of their first SMS,
        email and webhook methods, unless the attempt was recorded or the consent revoked
        first. A redelivered event queues nothing more; a re-assignment cancels the older
        assignment's reminders not yet sent."""
        data: FollowUpAssigned = event.data
        if self.follow_up_signer is None:
            metrics.PAGES.labels("none", MessageKind.REMINDER, "not_configured").inc()
            log.error(
                "a follow-up reminder cannot be sent: FOLLOW_UP_LINK_SECRET is not set",
                extra={"task_id": str(data.task_id), "attempt": data.attempt},
            )
            return
        for channel in await reminders.replaced(connection, data):
            metrics.PAGES.labels(channel, MessageKind.REMINDER, "cancelled").inc()
        queued = await reminders.add(connection, event.id, event.correlationid, data)
        if not queued and not reminders.reminded_methods(data.contacts):
            log.warning(
                "a follow-up's coach has no method a reminder goes on",
                extra={"task_id": str(data.task_id), "coach_id": str(data.coach_id)},
            )

    async def follow_up_attempted(self, connection: Connection, event: Envelope[Any]) -> None:
        """An attempt was recorded (any result): its reminders not yet sent are dropped.
        Only the ids are read; the outcomes (42 CFR Part 2) are not kept here."""
        data: FollowUpAttempted = event.data
        for channel in await reminders.close(
            connection, data.referral_id, data.task_id, data.attempt, "attempted", data.attempted_at
        ):
            metrics.PAGES.labels(channel, MessageKind.REMINDER, "cancelled").inc()

    async def follow_up_consent_revoked(self, connection: Connection, event: Envelope[Any]) -> None:
        """The patient withdrew their follow-up consent: no reminder of the referral leaves."""
        data: FollowUpConsentRevoked = event.data
        for channel in await reminders.close(
            connection, data.referral_id, None, 0, "consent_revoked", data.revoked_at
        ):
            metrics.PAGES.labels(channel, MessageKind.REMINDER, "cancelled").inc()

    async def coach_phones_changed(self, connection: Connection, event: Envelope[Any]) -> None:
        """The roster's phones for one coach, as they now stand: who may text as a coach."""
        data: CoachPhonesChanged = event.data
        phones = data.phones if data.active else ()
        await store.replace_coach_phones(connection, data.coach_id, phones, data.changed_at)

    async def _offer_settled(self, connection: Connection, record: OfferRecord) -> None:
        """The offer needs no more paging: drop what has not left, stop channel fallbacks."""
        await store.save_offer_state(connection, record)
        await store.cancel_pending(connection, record.offer_id)
        for message in await store.messages_of(connection, record.offer_id):
            # A fallback timer being fired finds the offer settled once this commits.
            await self.timers.cancel_unless_firing(connection, message.message_id)

    async def _follow_up(
        self, connection: Connection, record: OfferRecord, kind: MessageKind
    ) -> None:
        """Tell the coach, the way the offer reached them; a coach never paged hears nothing.
        An accept texted back is answered by text, on the phone that carried it, though the
        page reached them last another way (issue #12: STOP moved the page to email, START,
        then "1B": "a text follows" promised a text, and the confirmation went by email)."""
        reached = store.reached(await store.messages_of(connection, record.offer_id))
        if reached is None:
            return
        index = reached.contact_index
        if await store.accepted_via(connection, record.offer_id) is ResponseVia.SMS_REPLY:
            for position, point in enumerate(record.contacts):
                if (
                    point.channel is Channel.SMS
                    and await store.reply_code(connection, point.destination, record.offer_id)
                    and not await store.blocked_methods(
                        connection, {(Channel.SMS, point.destination)}
                    )
                ):
                    index = position
                    break
        contact = record.contacts[index]
        await store.add_message(
            connection, uuid4(), record.offer_id, kind, index, contact, self.clock()
        )

    # Delivery (called by the delivery worker)

    async def claim_due(self, limit: int) -> list[Outgoing]:
        """Due messages, each passed through its throttle and committed as `sending`."""
        outgoing: list[Outgoing] = []
        async with self.outbox.transaction(self.pool) as connection:
            now = self.clock()
            rules = self.settings.throttle_rules
            claimed = await store.claim_due(connection, limit)
            offer_ids = {message.offer_id for message in claimed}
            # Offers are locked before their messages everywhere else; here the messages
            # came first, so take only the offers nobody holds, and leave the messages of
            # the others pending for the next cycle rather than wait (decision 0021).
            offers = await store.lock_free_offers(connection, offer_ids)
            claimed = [message for message in claimed if message.offer_id in offers]
            paged = await store.first_pages_out(connection, offer_ids)
            blocked = await store.blocked_methods(
                connection, {(message.channel, message.destination) for message in claimed}
            )
            await store.lock_phones(
                connection,
                [
                    message.destination
                    for message in claimed
                    if message.kind is MessageKind.OFFER and message.channel is Channel.SMS
                ],
            )
            for message in claimed:
                record = offers[message.offer_id]  # a message's offer_id is a foreign key
                first_out = message.offer_id in paged
                if message.kind is MessageKind.OFFER and not record.coach_offer.may_page(
                    now, first_page_out=first_out
                ):
                    await store.finish(connection, message.message_id, MessageState.CANCELLED)
                    metrics.PAGES.labels(message.channel, message.kind, "cancelled").inc()
                    continue
                method = blocked.get((message.channel, message.destination))
                if method is not None:
                    await self._blocked(connection, message, record, method)
                    continue
                recent = await store.recent_sends(
                    connection, message.channel, message.destination, now - rules.window
                )
                said_yes = message.kind is not MessageKind.OFFER and (
                    await store.accepted_via(connection, record.offer_id) is not None
                )
                verdict = throttle(message.kind, recent, now, rules, coach_said_yes=said_yes)
                if isinstance(verdict, Refuse) and message.kind is MessageKind.OFFER:
                    # The phone's quarter hour is spent: the page moves on to the coach's
                    # next method, or with none left the offer ends not_contacted at once,
                    # and matching asks others until a slot frees (decision 0032).
                    metrics.THROTTLED.labels(message.channel, message.kind, "moved_on").inc()
                    log.warning(
                        "page refused by its contact method's throttle; moving on",
                        extra={**_ids(record.offer_id), "channel": message.channel.value},
                    )
                    await self._throttled(connection, message, recent, now)
                    await self._failed(
                        connection, message, record, PageFailure.THROTTLED, MessageState.THROTTLED
                    )
                    continue
                if isinstance(verdict, Refuse):
                    metrics.THROTTLED.labels(message.channel, message.kind, "refused").inc()
                    log.warning(
                        "message refused by its contact method's throttle",
                        extra={**_ids(record.offer_id), "channel": message.channel.value},
                    )
                    await self._failed(
                        connection, message, record, PageFailure.THROTTLED, MessageState.THROTTLED
                    )
                    continue
                await store.mark_sending(
                    connection, message.message_id, self.settings.sending_deadline_seconds
                )
                code = None
                if message.channel is Channel.SMS:
                    code = (
                        await store.assign_reply_code(
                            connection, message.destination, record.offer_id, now
                        )
                        if message.kind is MessageKind.OFFER
                        else await store.reply_code(
                            connection, message.destination, record.offer_id
                        )
                    )
                outgoing.append(self._outgoing(message, record, now, code))
        return outgoing

    async def _throttled(
        self, connection: Connection, message: MessageRecord, recent: RecentSends, now: datetime
    ) -> None:
        """The method's offer pages are over their ceiling: matching is told once that it is
        out of good standing (reason `throttled`), and a timer tells it the method is back
        when the window's oldest offer leaves it (decision 0032)."""
        until = slot_frees_at(recent, now, self.settings.throttle_rules)
        if not await store.mark_throttled(
            connection, message.channel, message.destination, until, now
        ):
            return  # told already
        await self._reachability(
            connection, message.channel, message.destination, False, OFFER_CEILING_REACHED
        )
        await self.timers.set(
            connection,
            _throttle_timer(message.channel, message.destination),
            THROTTLE_ENDS,
            until,
            {"channel": message.channel.value, "destination": message.destination},
        )

    async def throttle_ended(self, connection: Connection, timer: Timer) -> None:
        """A throttled method's window has a slot again: matching may ask its coach again,
        unless the method was blocked meanwhile (STOP, never deliverable), which it heard."""
        channel = Channel(timer.payload["channel"])
        destination = timer.payload["destination"]
        if not await store.end_throttle(connection, channel, destination):
            return
        if await store.blocked_methods(connection, {(channel, destination)}):
            return
        await self._reachability(connection, channel, destination, True, OFFER_CEILING_FREED)

    async def _blocked(
        self,
        connection: Connection,
        message: MessageRecord,
        record: OfferRecord,
        method: BlockedMethod,
    ) -> None:
        """A message to an opted-out or unreachable method never leaves: a page moves on to
        the coach's next method at once, a notice is dropped."""
        if message.kind is not MessageKind.OFFER:
            await store.finish(connection, message.message_id, MessageState.CANCELLED)
            metrics.PAGES.labels(message.channel, message.kind, "cancelled").inc()
            return
        failure = (
            PageFailure.UNSUBSCRIBED
            if method.state is MethodState.OPTED_OUT
            else PageFailure.INVALID_DESTINATION
        )
        # Matching offered to a blocked method: it missed the block (made before it heard
        # of blocks, decision 0019), so it is told again.
        await self._reachability(
            connection, message.channel, message.destination, False, method.reason
        )
        await self._failed(connection, message, record, failure)

    async def record_send(self, outgoing: Outgoing, outcome: SendOutcome) -> bool:
        """Store what the provider said; True if the outcome is unknown and needs a lookup."""
        if isinstance(outcome, Transient | Permanent | Ambiguous):
            metrics.PROVIDER_ERRORS.labels(outgoing.channel, outcome.code).inc()
        async with self.outbox.transaction(self.pool) as connection:
            message = await store.message(connection, outgoing.message_id, lock=True)
            if message is None or message.state is not MessageState.SENDING:
                return False  # reconciled meanwhile by another replica
            # The offer's lock before any write: its consumer, holding it, waits for
            # this message's timer (decision 0021).
            record = await store.offer(connection, message.offer_id, lock=True)
            assert record is not None
            decision = after_send(
                outcome,
                message.attempts,
                self.settings.retry_policy,
                random.uniform(0.5, 1.0),
                await self._retry_for(connection, message, record),
            )
            if isinstance(decision, Reconcile):
                return True
            if isinstance(decision, RetryIn):
                metrics.SEND_RETRIES.labels(message.channel).inc()
                await store.retry_later(connection, message.message_id, decision.seconds)
            elif isinstance(decision, MarkSent):
                await self._sent(connection, message, record, decision)
            else:
                if isinstance(outcome, Permanent) and outcome.never_deliverable:
                    await self._mark_unreachable(connection, message, outcome.code)
                await self._failed(connection, message, record, decision.failure)
        if isinstance(decision, RetryIn):
            self.wake_delivery()
        return False

    async def _retry_for(
        self, connection: Connection, message: MessageRecord, record: OfferRecord
    ) -> float | None:
        """Seconds an offer's page to the coach's last contact method may still be retried
        through a provider's outage: until its page deadline (else its expiry) while no
        page of the offer is out. None (`send_attempts`, then the next step) while the
        coach has a next method to fall back to, once a page is out (the coach was
        reached), and for the coach's other messages."""
        if message.kind is not MessageKind.OFFER:
            return None
        if next_contact(message.contact_index, len(record.contacts)) is not None:
            return None
        if record.offer_id in await store.first_pages_out(connection, {record.offer_id}):
            return None
        offer = record.coach_offer
        until = offer.page_deadline or offer.expires_at
        return (until - self.clock()).total_seconds()

    async def _mark_unreachable(
        self, connection: Connection, message: MessageRecord, code: str
    ) -> None:
        await self._block_unreachable(connection, message.channel, message.destination, code)
        log.warning(
            "a contact method is unreachable; nothing more is sent to it",
            extra={"channel": message.channel.value, "code": code},
        )

    async def _block_unreachable(
        self, connection: Connection, channel: Channel, destination: str, code: str
    ) -> None:
        """A provider said `destination` can never be delivered to (`code`): nothing more
        goes to it, and matching hears it, in the caller's transaction. Pages, supervisor
        notices and follow-up reminders all end here."""
        await store.block_method(
            connection,
            channel,
            destination,
            MethodState.UNREACHABLE,
            f"provider:{code}",
            self.clock(),
        )
        await self._reachability(connection, channel, destination, False, f"provider:{code}")

    async def claim_due_notices(self, limit: int) -> list[Outgoing]:
        """Due supervisor notices, committed as `sending`; lost ones failed first. Per
        destination, past the quarter hour's limit the rest leave as one digest, or wait
        for the window to free a slot (`plan_notices`)."""
        outgoing: list[Outgoing] = []
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            rules = self.settings.throttle_rules
            for channel in await notices.fail_lost(connection):
                metrics.PAGES.labels(channel, MessageKind.UNASSIGNED, "failed").inc()
            claimed = await notices.claim_due(connection, limit)
            # Held back (quarter-hour limit, retry, restart): still true? A request assigned
            # or cancelled since it went unassigned needs no cover (issue #12).
            stale = await notices.resolved(connection, claimed)
            live = [notice for notice in claimed if notice.notice_id not in stale]
            dropped = stale | await self._queued_before_off(connection, live, now)
            for notice in claimed:
                if notice.notice_id in dropped:
                    await _drop_notice(connection, notice)
            claimed = [notice for notice in claimed if notice.notice_id not in dropped]
            blocked = await store.blocked_methods(
                connection, {(notice.channel, notice.destination) for notice in claimed}
            )
            await notices.lock_destinations(connection, [n.destination for n in claimed])
            by_destination: dict[tuple[Channel, str], list[notices.NoticeRecord]] = {}
            for notice in claimed:
                by_destination.setdefault((notice.channel, notice.destination), []).append(notice)
            for (channel, destination), due in by_destination.items():
                if (channel, destination) in blocked:
                    for notice in due:
                        await _drop_notice(connection, notice)
                    continue
                sends, oldest = await notices.sends_in_window(
                    connection, channel, destination, now - rules.window
                )
                plan = plan_notices(len(due), sends, oldest, rules)
                if plan.hold_until is not None:
                    await notices.hold(connection, [n.notice_id for n in due], plan.hold_until)
                    metrics.THROTTLED.labels(channel, MessageKind.UNASSIGNED, "deferred").inc(
                        len(due)
                    )
                    continue
                batches = [[n] for n in due[: plan.singles]]
                if plan.digest:
                    batches.append(due[plan.singles :])
                    metrics.THROTTLED.labels(channel, MessageKind.UNASSIGNED, "digested").inc(
                        len(due) - plan.singles
                    )
                for carrier, *folded in batches:
                    await notices.mark_leaving(
                        connection,
                        carrier.notice_id,
                        [n.notice_id for n in folded],
                        self.settings.sending_deadline_seconds,
                    )
                    told = [_unassigned(n) for n in (carrier, *folded)]
                    outgoing.append(
                        Outgoing(
                            message_id=carrier.notice_id,
                            channel=channel,
                            destination=destination,
                            content=(
                                content.unassigned_digest(told)
                                if folded
                                else content.unassigned(told[0])
                            ),
                            answer_url=self._no_answer_url,
                            correlation_id=carrier.correlation_id,
                        )
                    )
        return outgoing

    async def _queued_before_off(
        self, connection: Connection, due: list[notices.NoticeRecord], now: datetime
    ) -> set[UUID]:
        """The notices of `due` to a supervisor who texted OFF after they were queued for her
        (fresh34a), while another supervisor told of the same referral is on: matching leaves
        her out of notices decided after her OFF unless every supervisor was off, and those
        go as decided; and one told to nobody else goes too (fresh34c: the site's only
        supervisor went off, and two referrals were told to nobody)."""
        off = await store.off_since(connection, {n.destination for n in due}, now)
        queued_before = [
            n for n in due if off.get(n.destination, n.unassigned_at) > n.unassigned_at
        ]
        told_to = await notices.destinations_of(connection, {n.referral_id for n in queued_before})
        everyone = {d for destinations in told_to.values() for d in destinations}
        off |= await store.off_since(connection, everyone - off.keys(), now)
        return {
            n.notice_id for n in queued_before if told_to.get(n.referral_id, set()) - off.keys()
        }

    async def claim_due_reminders(self, limit: int) -> list[Outgoing]:
        """Due follow-up reminders, committed as `sending`; lost ones failed first. One to
        an opted-out or unreachable method is dropped; one past its destination's flood
        ceiling waits a minute (it is due for days, never dropped for it)."""
        outgoing: list[Outgoing] = []
        async with self.pool.acquire() as connection, connection.transaction():
            now = self.clock()
            rules = self.settings.throttle_rules
            for channel in await reminders.fail_lost(connection):
                metrics.PAGES.labels(channel, MessageKind.REMINDER, "failed").inc()
            claimed = await reminders.claim_due(connection, limit)
            blocked = await store.blocked_methods(
                connection, {(r.channel, r.destination) for r in claimed}
            )
            for reminder in claimed:
                link = self.follow_up_link(reminder.assignment_id)
                if (reminder.channel, reminder.destination) in blocked or link is None:
                    await reminders.finish(connection, reminder.reminder_id, "cancelled")
                    metrics.PAGES.labels(reminder.channel, MessageKind.REMINDER, "cancelled").inc()
                    continue
                recent = await reminders.sends_in_window(
                    connection, reminder.channel, reminder.destination, now - rules.window
                )
                verdict = throttle(MessageKind.REMINDER, RecentSends(notices=recent), now, rules)
                if isinstance(verdict, Refuse):
                    metrics.THROTTLED.labels(
                        reminder.channel, MessageKind.REMINDER, "deferred"
                    ).inc()
                    await reminders.retry_later(
                        connection, reminder.reminder_id, THROTTLED_REMINDER_RETRY_SECONDS
                    )
                    continue
                await reminders.mark_sending(
                    connection, reminder.reminder_id, self.settings.sending_deadline_seconds
                )
                outgoing.append(
                    Outgoing(
                        message_id=reminder.reminder_id,
                        channel=reminder.channel,
                        destination=reminder.destination,
                        content=content.reminder(
                            reminder.site_short_name, reminder.window_days, link
                        ),
                        answer_url=self._no_answer_url,
                        correlation_id=reminder.correlation_id,
                    )
                )
        return outgoing

    async def record_reminder(self, outgoing: Outgoing, outcome: SendOutcome) -> None:
        """Store what the provider said of a reminder: retried through a provider outage
        (`send_attempts`), and an unknown outcome is a failure, never sent again."""
        if isinstance(outcome, Transient | Permanent | Ambiguous):
            metrics.PROVIDER_ERRORS.labels(outgoing.channel, outcome.code).inc()
        async with self.pool.acquire() as connection, connection.transaction():
            attempts = await reminders.sending_attempts(connection, outgoing.message_id)
            if attempts is None:
                return  # failed meanwhile as lost
            decision = after_send(
                outcome, attempts, self.settings.retry_policy, random.uniform(0.5, 1.0), None
            )
            if isinstance(decision, RetryIn):
                metrics.SEND_RETRIES.labels(outgoing.channel).inc()
                await reminders.retry_later(connection, outgoing.message_id, decision.seconds)
                label = "retried"
            elif isinstance(decision, MarkSent):
                await reminders.finish(
                    connection, outgoing.message_id, "sent", decision.provider_ref
                )
                label = "sent"
            else:
                if isinstance(outcome, Permanent) and outcome.never_deliverable:
                    await self._block_unreachable(
                        connection, outgoing.channel, outgoing.destination, outcome.code
                    )
                await reminders.finish(connection, outgoing.message_id, "failed")
                label = "failed"
                log.error(
                    "a follow-up reminder could not be sent",
                    extra={
                        "message_id": str(outgoing.message_id),
                        "channel": outgoing.channel.value,
                    },
                )
        metrics.PAGES.labels(outgoing.channel, MessageKind.REMINDER, label).inc()
        if label == "retried":
            self.wake_delivery()

    async def record_notice(self, outgoing: Outgoing, outcome: SendOutcome) -> None:
        """Store what the provider said of a notice. An unknown outcome is a failure: a
        notice is never sent twice."""
        if isinstance(outcome, Transient | Permanent | Ambiguous):
            metrics.PROVIDER_ERRORS.labels(outgoing.channel, outcome.code).inc()
        async with self.pool.acquire() as connection, connection.transaction():
            sending = await notices.attempts(connection, outgoing.message_id)
            if sending is None:
                return  # failed meanwhile as lost
            attempts, unassigned_at = sending
            # Retried through a provider outage like a page (issue #12 F3): five tries in
            # six seconds lost every notice of a 30 s outage.
            retry_until = unassigned_at + timedelta(seconds=self.settings.notice_retry_seconds)
            decision = after_send(
                outcome,
                attempts,
                self.settings.retry_policy,
                random.uniform(0.5, 1.0),
                (retry_until - self.clock()).total_seconds(),
            )
            if isinstance(decision, RetryIn):
                metrics.SEND_RETRIES.labels(outgoing.channel).inc()
                await notices.retry_later(connection, outgoing.message_id, decision.seconds)
                outcome_label = "retried"
            elif isinstance(decision, MarkSent):
                await notices.finish(connection, outgoing.message_id, "sent", decision.provider_ref)
                outcome_label = "sent"
            else:
                if isinstance(outcome, Permanent) and outcome.never_deliverable:
                    await self._block_unreachable(
                        connection, outgoing.channel, outgoing.destination, outcome.code
                    )
                await notices.finish(connection, outgoing.message_id, "failed")
                outcome_label = "failed"
                log.error(
                    "a supervisor's notice could not be sent",
                    extra={
                        "notice_id": str(outgoing.message_id),
                        "channel": outgoing.channel.value,
                        "code": outcome.code if not isinstance(outcome, Accepted) else "",
                    },
                )
        if outcome_label != "retried":
            metrics.PAGES.labels(outgoing.channel, MessageKind.UNASSIGNED, outcome_label).inc()
        else:
            self.wake_delivery()

    async def claim_lost_sends(self, connection: Connection, limit: int) -> list[Outgoing]:
        """Within the caller's transaction: sends past their deadline, locked for a lookup."""
        outgoing = []
        for message in await store.claim_lost_sends(connection, limit):
            record = await store.offer(connection, message.offer_id)
            assert record is not None
            code = None
            if message.channel is Channel.SMS:
                code = await store.reply_code(connection, message.destination, record.offer_id)
            outgoing.append(self._outgoing(message, record, self.clock(), code))
        return outgoing

    async def record_lookup(
        self, connection: Connection, outgoing: Outgoing, outcome: LookupOutcome
    ) -> None:
        message = await store.message(connection, outgoing.message_id, lock=True)
        if message is None or message.state is not MessageState.SENDING:
            return
        record = await store.offer(connection, message.offer_id, lock=True)
        assert record is not None
        held_elsewhere = False
        if isinstance(outcome, Found):
            holder = await store.message_by_provider_ref(connection, outcome.provider_ref)
            held_elsewhere = holder is not None and holder.message_id != message.message_id
        finding = "held_elsewhere" if held_elsewhere else FINDINGS[type(outcome)]
        metrics.RECONCILED.labels(message.channel, finding).inc()
        log.warning(
            "a send with a lost outcome was reconciled",
            extra={
                "message_id": str(message.message_id),
                "channel": message.channel.value,
                "finding": finding,
            },
        )
        decision = after_lookup(outcome, held_elsewhere)
        if isinstance(decision, MarkSent):
            await self._sent(connection, message, record, decision)
        else:
            await self._failed(connection, message, record, decision.failure)

    async def delivery_reported(
        self,
        provider_ref: str,
        delivered: bool | None,
        error_code: str | None,
        message_id: UUID | None = None,
    ) -> ReportOutcome:
        """A provider's report for the message it calls `provider_ref`: final (`delivered`
        True or False) or not yet (None: queued, sent...). `message_id` is notify's id for the
        message when the report names it (Twilio's StatusCallback carries it).

        A report naming a message still `sending` stores `provider_ref` for it first: the
        send's own answer was lost (a database outage, a crash), and the provider has just
        said it holds the message. Returns what became of a final report: APPLIED, IGNORED
        (already final, or not a final report), or KEPT (no message has that id yet: the
        send's response is still in flight; applied when the id is stored, or expires after
        EARLY_REPORTS_KEPT_SECONDS). The caller answers the provider 2xx in every case.
        """
        async with self.outbox.transaction(self.pool) as connection:
            if message_id is not None:
                await self._sent_by_report(connection, message_id, provider_ref)
            await store.lock_provider_ref(connection, provider_ref)
            message = await store.message_by_provider_ref(connection, provider_ref)
            if delivered is None:
                outcome = ReportOutcome.IGNORED
            elif message is None:
                expired = await store.keep_early_report(
                    connection,
                    provider_ref,
                    EarlyReport(delivered, error_code),
                    EARLY_REPORTS_KEPT_SECONDS,
                )
                metrics.DELIVERY_REPORTS.labels(ReportOutcome.EXPIRED).inc(expired)
                if expired:
                    log.warning(
                        "delivery reports for unknown messages expired",
                        extra={"expired": expired},
                    )
                log.info("delivery report kept until its message's id is stored")
                outcome = ReportOutcome.KEPT
            else:
                outcome = await self._apply_report(connection, message, delivered, error_code)
        if delivered is not None:
            metrics.DELIVERY_REPORTS.labels(outcome).inc()
        return outcome

    async def _sent_by_report(
        self, connection: Connection, message_id: UUID, provider_ref: str
    ) -> None:
        """Within the caller's transaction: a message still `sending` that the provider
        reports on is sent, as `provider_ref`. Takes the message's lock before the
        reference's, the order `record_send` takes them in."""
        message = await store.message(connection, message_id, lock=True)
        if message is None:
            if await reminders.reported(connection, message_id, provider_ref):
                log.info(
                    "a reminder's provider id stored from the provider's report",
                    extra={"message_id": str(message_id)},
                )
            elif await notices.reported(connection, message_id, provider_ref):
                log.info(
                    "a notice's provider id stored from the provider's report",
                    extra={"message_id": str(message_id)},
                )
            return
        if message.state is not MessageState.SENDING:
            return  # recorded already
        record = await store.offer(connection, message.offer_id, lock=True)
        assert record is not None  # a message's offer_id is a foreign key
        metrics.RECONCILED.labels(message.channel, "reported").inc()
        log.info(
            "a send's provider id stored from the provider's report",
            extra={"message_id": str(message_id), "channel": message.channel.value},
        )
        await self._sent(connection, message, record, MarkSent(provider_ref, delivered=False))

    async def _apply_report(
        self,
        connection: Connection,
        message: MessageRecord,
        delivered: bool,
        error_code: str | None,
    ) -> ReportOutcome:
        """Within the caller's transaction: APPLIED, or IGNORED if the message is final."""
        target = after_report(message.state, delivered)
        if target is None:
            return ReportOutcome.IGNORED
        record = await store.offer(connection, message.offer_id, lock=True)
        assert record is not None  # a message's offer_id is a foreign key
        if target is MessageState.DELIVERED:
            await store.mark_delivered(connection, message.message_id)
            metrics.PAGES.labels(message.channel, message.kind, "delivered").inc()
            if message.kind is MessageKind.OFFER:
                await self._emit(connection, record, self._page_delivered(message, record))
        else:
            if error_code:
                metrics.PROVIDER_ERRORS.labels(message.channel, f"status:{error_code}").inc()
            await self._failed(connection, message, record, PageFailure.NOT_DELIVERED)
        return ReportOutcome.APPLIED

    async def channel_fallback(self, connection: Connection, timer: Timer) -> None:
        """A page went unanswered on one contact method: try the coach's next one."""
        message = await store.message(connection, UUID(timer.payload["message_id"]))
        if message is None:
            return
        record = await store.offer(connection, message.offer_id, lock=True)
        assert record is not None
        following = next_contact(message.contact_index, len(record.contacts))
        if following is None or not record.coach_offer.still_wanted(self.clock()):
            return
        if await self._page_method(connection, record, following, self.clock()):
            metrics.CHANNEL_FALLBACKS.labels("not_answered").inc()

    async def _sent(
        self, connection: Connection, message: MessageRecord, record: OfferRecord, sent: MarkSent
    ) -> None:
        """Store the provider's id for the message, then apply a report that came before it."""
        if sent.provider_ref is None or sent.delivered:
            await self._record_sent(connection, message, record, sent)
            return
        await store.lock_provider_ref(connection, sent.provider_ref)
        await self._record_sent(connection, message, record, sent)
        kept = await store.take_early_report(connection, sent.provider_ref)
        if kept is None:
            return
        stored = await store.message(connection, message.message_id)
        assert stored is not None  # locked by the caller
        outcome = await self._apply_report(connection, stored, kept.delivered, kept.error_code)
        if outcome is ReportOutcome.APPLIED:
            metrics.DELIVERY_REPORTS.labels(ReportOutcome.APPLIED_LATE).inc()

    async def _record_sent(
        self, connection: Connection, message: MessageRecord, record: OfferRecord, sent: MarkSent
    ) -> None:
        await store.mark_sent(connection, message.message_id, sent.provider_ref, sent.delivered)
        metrics.PAGES.labels(message.channel, message.kind, "sent").inc()
        if sent.delivered:
            metrics.PAGES.labels(message.channel, message.kind, "delivered").inc()
        if message.kind is not MessageKind.OFFER:
            return
        now = self.clock()
        if record.coach_offer.paged_at is None:
            record.coach_offer.paged_at = now  # the ack clock's start, as matching reads it
            await store.mark_paged(connection, record.offer_id, now)
        metrics.OFFER_TO_PAGE.labels(message.channel).observe(
            max(0.0, (now - record.offered_at).total_seconds())
        )
        events: list[EventPayload] = [
            PageSent(
                referral_id=record.referral_id,
                page_id=message.message_id,
                offer_id=record.offer_id,
                coach_id=record.coach_id,
                channel=message.channel,
                sent_at=now,
            )
        ]
        if sent.delivered:
            events.append(self._page_delivered(message, record))
        await self._emit(connection, record, *events)
        following = next_contact(message.contact_index, len(record.contacts))
        if following is not None and record.coach_offer.still_wanted(now):
            await self.timers.set(
                connection,
                message.message_id,
                CHANNEL_FALLBACK,
                now + self.settings.fallback_delay(record.site_id),
                {"message_id": str(message.message_id)},
            )  # fired within the timer loops' 5 s poll: soon enough for a channel fallback

    async def _failed(
        self,
        connection: Connection,
        message: MessageRecord,
        record: OfferRecord,
        failure: PageFailure,
        state: MessageState = MessageState.FAILED,
    ) -> None:
        """This contact method is done for; page the next one, or tell matching none is left."""
        await store.finish(connection, message.message_id, state, failure)
        await self.timers.cancel_unless_firing(connection, message.message_id)
        metrics.PAGES.labels(message.channel, message.kind, state.value).inc()
        if message.kind is not MessageKind.OFFER:
            return
        now = self.clock()
        following = next_contact(message.contact_index, len(record.contacts))
        if following is not None and record.coach_offer.still_wanted(now):
            await self._page_method(connection, record, following, now)
            metrics.CHANNEL_FALLBACKS.labels("failed").inc()
            self.wake_delivery()
        page_failed = PageFailed(
            referral_id=record.referral_id,
            page_id=message.message_id,
            offer_id=record.offer_id,
            coach_id=record.coach_id,
            channel=message.channel,
            failure=failure,
            all_channels_failed=coach_unreachable(
                following,
                (
                    m.state
                    for m in await store.messages_of(connection, record.offer_id)
                    if m.kind is MessageKind.OFFER
                ),
                failure,
            ),
            failed_at=now,
        )
        await self._emit(connection, record, page_failed)

    async def _page_method(
        self, connection: Connection, record: OfferRecord, index: int, now: datetime
    ) -> bool:
        """Queue the offer's page to the coach's contact method `index`; False if it was."""
        return await store.add_message(
            connection,
            uuid4(),
            record.offer_id,
            MessageKind.OFFER,
            index,
            record.contacts[index],
            now,
        )

    def _page_delivered(self, message: MessageRecord, record: OfferRecord) -> PageDelivered:
        return PageDelivered(
            referral_id=record.referral_id,
            page_id=message.message_id,
            offer_id=record.offer_id,
            coach_id=record.coach_id,
            channel=message.channel,
            delivered_at=self.clock(),
        )

    def _outgoing(
        self,
        message: MessageRecord,
        record: OfferRecord,
        now: datetime,
        code: tuple[str, bool] | None = None,
    ) -> Outgoing:
        """The message as handed to its provider; `code` is the offer's reply code on an SMS
        and whether its page showed it (a notice names the offer by it either way)."""
        shown = (
            code[0]
            if code is not None and (code[1] or message.kind is not MessageKind.OFFER)
            else None
        )
        return Outgoing(
            message_id=message.message_id,
            channel=message.channel,
            destination=message.destination,
            content=self._content(message, record, now, shown),
            answer_url=self.answer_url(record.offer_id),
            correlation_id=record.correlation_id,
        )

    def _content(
        self, message: MessageRecord, record: OfferRecord, now: datetime, code: str | None
    ) -> Content:
        link = self.link(record.offer_id)
        if message.kind is MessageKind.OFFER:
            return content.offer(
                record.site_short_name,
                record.urgency,
                link,
                code,
                replies_read=message.channel in _REPLIES_READ,
            )
        if message.kind is MessageKind.WITHDRAWN:
            reason = record.coach_offer.withdraw_reason or WithdrawReason.CANCELLED
            return content.withdrawn(record.site_short_name, reason, code)
        deadline = record.coach_offer.arrival_deadline or now
        return content.assigned(
            record.site_short_name, deadline, now, link, code, record.site_time_zone
        )

    # Answers

    async def offer_for(self, offer_id: UUID) -> OfferRecord | None:
        async with self.pool.acquire() as connection:
            return await store.offer(connection, offer_id)

    async def offer_seen(
        self,
        offer_id: UUID,
        client_address: str | None,
        fields: Callable[[OfferRecord], tuple[str, ...]],
    ) -> OfferRecord | None:
        """The offer its coach opens on their page, the look recorded in the audit trail in
        the read's own transaction: the coach saw `fields(record)` (names) of the referral,
        for treatment. None (and nothing recorded) for an offer not known."""
        async with self.pool.acquire() as connection, connection.transaction():
            record = await store.offer(connection, offer_id)
            if record is not None:
                coach = Accessor(
                    ActorKind.COACH, str(record.coach_id), Purpose.TREATMENT, client_address
                )
                entry = coach.saw("referral", record.referral_id, fields(record))
                await audit_log.record(connection, SCHEMA, entry)
        return record

    async def answer(
        self, offer_id: UUID, response: CoachResponse, via: ResponseVia
    ) -> OfferRecord | None:
        """Take a coach's answer from their link or keypad; the offer as it now stands."""
        async with self.outbox.transaction(self.pool) as connection:
            record = await store.offer(connection, offer_id, lock=True)
            if record is None:
                return None
            await self._answer(connection, record, response, via)
            return record

    def closed_text(
        self, record: OfferRecord, code: str | None = None, *, still_unassigned: bool = False
    ) -> str:
        """What became of an offer that takes no accept or decline now; `code` names it
        as its SMS did; `still_unassigned` as in `content.closed`."""
        offer = record.coach_offer
        return content.closed(
            record.site_short_name,
            offer.state,
            offer.withdraw_reason,
            code,
            still_unassigned=still_unassigned,
        )

    async def sms_reply(self, phone: str, body: str) -> str | None:
        """A coach's SMS reply; the text to answer them with, or None to say nothing.

        `body` is read here and forgotten: only what it was read as is kept or logged
        (a coach may type patient details). HELP is answered from any number; a sender
        that is not an E.164 number gets nothing; an opted-out or unreachable number gets
        nothing else; a number on no coach's roster (CoachPhonesChanged) and never paged
        is told it is not registered, whatever it texted (STOP and START aside)."""
        return await self.sms_reading(phone, read_reply(body))

    async def sms_reading(self, phone: str, reading: ReplyReading) -> str | None:
        """`sms_reply` for a reply already read (one spooled during a database outage is
        applied this way once the database is back). Raises a transient database error
        while the database is away."""
        if not _E164.match(phone):
            # A short code, an alphanumeric sender or a forged form: no coach's number, and
            # nothing we could answer or pass on (matching names coaches by E.164 phones).
            return _read("not_e164", None)
        async with self.outbox.transaction(self.pool) as connection:
            now = self.clock()
            method = (await store.blocked_methods(connection, [(Channel.SMS, phone)])).get(
                (Channel.SMS, phone)
            )
            reply = reading.for_standing(
                method is not None and method.state is MethodState.OPTED_OUT
            )
            help_text = content.help_text(
                self.settings.notify_program_name,
                self.settings.supervisor_phone(await store.phone_site(connection, phone)),
            )
            if reply is Keyword.HELP:
                # CTIA: HELP is answered even on an opted-out number (the carrier lets it
                # through, and it sends nothing we were told not to send: no offer).
                return _read("help", help_text)
            if reply is Keyword.OPT_IN:
                if method is not None:
                    await store.unblock_method(connection, Channel.SMS, phone)
                    await self._back_in_standing(connection, Channel.SMS, phone, "start_keyword")
                    log.info("a coach's number opted back in to texts")
                return _read("opt_in", None)  # the carrier confirms an opt-in itself
            if method is not None:
                return _read("ignored", None)
            if reply is Keyword.OPT_OUT:
                await self._opt_out(connection, phone, now)
                return _read("opt_out", None)  # the carrier confirms an opt-out itself
            if not await store.is_coach_phone(connection, phone):
                # OFF, ON, an answer or anything else from a number on no coach's roster:
                # nothing is changed, and the sender is told why rather than "you are off".
                program = self.settings.notify_program_name
                return _read("not_registered", content.not_registered(program))
            if reply is Keyword.UNAVAILABLE:
                text = await self._go_off(connection, phone, now + content.OFF_FOR, now)
                return _read("unavailable", text)
            if isinstance(reply, OffUntil):
                zone = await store.phone_time_zone(connection, phone)
                until = content.next_wall_time(now, reply.hour, reply.minute, zone)
                return _read("unavailable", await self._go_off(connection, phone, until, now))
            if reply is Keyword.AVAILABLE:
                return _read("available", await self._come_on(connection, phone, now))
            offers = await store.offers_paged_to(connection, phone, now)
            # Offers paged today but closed since (declined, completed, taken) take no
            # text: with none open, a text after a reminder is about the reminder. An
            # answer (1/2/YES/NO) still hears what became of the offer it names.
            still_open = any(o.record.coach_offer.still_wanted(now) for o in offers)
            about_offers = bool(offers) and isinstance(reply, Answer | SeveralCodes)
            if (
                not still_open
                and not about_offers
                and (
                    assignment := await reminders.last_sent_to(
                        connection, Channel.SMS, phone, now - REMINDER_REPLIES_READ_FOR
                    )
                )
            ):
                # A reminder takes no reply: its link records the call (issue #16).
                return _read("reminder", content.reminder_reply(self.follow_up_link(assignment)))
            if not offers:
                # A coach's number we paged nothing in a day: still answered (issue #15,
                # "every text gets an answer"), an answer with what it would have changed.
                program = self.settings.notify_program_name
                if isinstance(reply, Answer | Unclear | SeveralCodes):
                    return _read("no_open_request", content.no_open_request(program))
                return _read("not_understood", help_text)
            if isinstance(reply, Unclear):
                # "yes no C" names C: the question names it back, whatever else is open.
                codes = [reply.code] if reply.code else []
                codes = codes or [o.code for o in offers if o.record.coach_offer.still_wanted(now)]
                return _read("unclear", content.unclear(codes))
            if isinstance(reply, SeveralCodes):
                # A code the phone was never given is named, not suggested back (fresh34a).
                given = {o.code for o in offers}
                if unknown := [code for code in reply.codes if code not in given]:
                    return _read("unknown_code", content.unknown_code(unknown[0]))
                # Those still open to an answer are suggested, not one already taken.
                open_now = {o.code for o in offers if o.record.coach_offer.still_wanted(now)}
                suggested = [a for a in reply.answers if a[0] in open_now] or reply.answers
                return _read("several_codes", content.one_request_a_text(suggested))
            if not isinstance(reply, Answer):
                return _read("not_understood", help_text)
            return await self._sms_answer(connection, reply, offers, now, phone)

    async def _sms_answer(
        self,
        connection: Connection,
        reply: Answer,
        offers: list[PhoneOffer],
        now: datetime,
        phone: str,
    ) -> str:
        """Apply an accept or decline to the offer it names; the text that answers it."""
        still_open = [o for o in offers if o.record.coach_offer.still_wanted(now)]
        if reply.code is None:
            if len(still_open) > 1:
                named = [
                    OpenOffer(
                        o.code,
                        o.record.site_short_name,
                        o.paged_at,
                        o.record.urgency,
                        o.record.site_time_zone,
                    )
                    for o in still_open
                ]
                return _read("ambiguous", content.which_offer(named, now))
            target = still_open[0] if still_open else offers[-1]
        else:
            named_by_code = [o for o in offers if o.code == reply.code]
            if not named_by_code:
                return _read("unknown_code", content.unknown_code(reply.code))
            target = named_by_code[-1]
        record = target.record
        with correlation(record.correlation_id):  # from here the reply is about one referral
            if not record.coach_offer.still_wanted(now):
                # A supervisor answering their own expired offer of a request they were
                # told has no coach: cover is still needed (issue #12).
                unassigned = await notices.still_unassigned(connection, record.referral_id, phone)
                return _read(
                    "closed", self.closed_text(record, target.code, still_unassigned=unassigned)
                )
            await self._answer(connection, record, reply.response, ResponseVia.SMS_REPLY)
            accepted = reply.response is CoachResponse.ACCEPTED
            link = self.link(record.offer_id)
            return _read(
                "answer",
                content.reply_acknowledgement(accepted, record.site_short_name, link, target.code),
            )

    async def _go_off(
        self,
        connection: Connection,
        phone: str,
        until: datetime,
        now: datetime,
        time_zone: str | None = None,
    ) -> str:
        """OFF (by SMS or from the coach's page) until `until`: matching, which knows whose
        number it is, makes it an override (CoachAvailabilityChanged). Each request still
        open on this phone is answered with a decline, so it moves to the next coach at
        once instead of waiting out its ack timeout (decision 0019), and so is each still
        open for the coach whose number it is, whichever method paged it. The answer says
        until when (site-local) and how many requests were passed on."""
        await store.lock_availability(connection, [phone])
        change = CoachAvailabilityChanged(phone=phone, available=False, changed_at=now, until=until)
        await self.outbox.put(
            connection, Envelope.wrap(change, source=SOURCE, correlation_id=str(uuid4()))
        )
        await store.mark_off(connection, phone, until, now)
        passed_on = 0
        paged = [p.record for p in await store.offers_paged_to(connection, phone, now)]
        known = {record.offer_id for record in paged}
        others = [
            record
            for record in await store.open_offers_of_phone(connection, phone)
            if record.offer_id not in known
        ]
        for record in [*paged, *others]:
            if record.coach_offer.still_wanted(now):
                with correlation(record.correlation_id):
                    await self._answer(
                        connection, record, CoachResponse.DECLINED, ResponseVia.SMS_REPLY
                    )
                passed_on += 1
        # The page's own site's clock, else that of the latest offer texted to the phone.
        zone = time_zone or await store.phone_time_zone(connection, phone)
        program = self.settings.notify_program_name
        return content.went_off(program, until, zone, now, passed_on)

    async def _come_on(self, connection: Connection, phone: str, now: datetime) -> str:
        """ON: the OFF ends (sent to matching whatever notify remembers: an OFF taken before
        notify kept them ends too); the answer says whether anything was off."""
        change = CoachAvailabilityChanged(phone=phone, available=True, changed_at=now)
        await self.outbox.put(
            connection, Envelope.wrap(change, source=SOURCE, correlation_id=str(uuid4()))
        )
        was_off = await store.mark_on(connection, phone, now)
        return content.came_on(self.settings.notify_program_name, was_off)

    async def availability_from_page(
        self, offer_id: UUID, available: bool, until: datetime | None
    ) -> str | None:
        """The coach went off call (until `until`, UTC) or back on from their page, as if
        they had texted OFF / ON from the phone the offer was paged to; what changed, as
        the SMS answer says it. None when the offer is unknown or went to no phone."""
        async with self.outbox.transaction(self.pool) as connection:
            record = await store.offer(connection, offer_id)
            if record is None:
                return None
            phone = coach_phone(record)
            if phone is None:
                return None
            now = self.clock()
            if available:
                return await self._come_on(connection, phone, now)
            ends = until or now + content.OFF_FOR
            return await self._go_off(connection, phone, ends, now, record.site_time_zone)

    async def off_until(self, record: OfferRecord) -> datetime | None:
        """When the OFF of the coach this offer went to ends; None when they are on call."""
        phone = coach_phone(record)
        if phone is None:
            return None
        async with self.pool.acquire() as connection:
            return await store.off_until(connection, phone, self.clock())

    async def _opt_out(self, connection: Connection, phone: str, now: datetime) -> None:
        """The coach texted STOP: nothing more goes to this number, and each open offer
        paged to it moves to the coach's next method, or matching is told none is left."""
        await store.block_method(
            connection, Channel.SMS, phone, MethodState.OPTED_OUT, "stop_keyword", now
        )
        await self._reachability(connection, Channel.SMS, phone, False, "stop_keyword")
        log.info("a coach's number opted out of texts")
        for message in await store.open_pages_to(connection, Channel.SMS, phone):
            record = await store.offer(connection, message.offer_id, lock=True)
            if record is not None and record.coach_offer.still_wanted(now):
                await self._failed(connection, message, record, PageFailure.UNSUBSCRIBED)

    async def clear_method(self, channel: Channel, destination: str) -> bool:
        """A coordinator put a method back in good standing: pages go to it again, and
        matching may ask its coach again. False if it was not blocked."""
        async with self.outbox.transaction(self.pool) as connection:
            if not await store.unblock_method(connection, channel, destination):
                return False
            await self._back_in_standing(connection, channel, destination, "admin")
        return True

    async def _back_in_standing(
        self, connection: Connection, channel: Channel, destination: str, reason: str
    ) -> None:
        """A blocked method was put back (START, a coordinator): matching hears it is back,
        or, while its offer ceiling is still spent, that it is spent (decision 0032), so that
        its coach is not asked until the window frees a slot (fresh29: START on a spent
        phone had every new referral offered to the coach and refused, over and over)."""
        if await store.is_throttled(connection, channel, destination):
            await self._reachability(connection, channel, destination, False, OFFER_CEILING_REACHED)
            return
        await self._reachability(connection, channel, destination, True, reason)

    async def _reachability(
        self,
        connection: Connection,
        channel: Channel,
        destination: str,
        reachable: bool,
        reason: str,
    ) -> None:
        """Tell matching, which knows whose method it is, that it went out of good standing
        or back into it (decision 0019): a coach none of whose methods is reachable is not
        offered anything, and one reachable again frees a slot."""
        change = ContactMethodReachabilityChanged(
            channel=channel,
            destination=destination,
            reachable=reachable,
            reason=reason,
            changed_at=self.clock(),
        )
        await self.outbox.put(
            connection, Envelope.wrap(change, source=SOURCE, correlation_id=str(uuid4()))
        )

    async def refresh_blocked_gauge(self) -> None:
        """Set the gauge of opted-out and unreachable methods from the database."""
        async with self.pool.acquire() as connection:
            counts = await store.count_blocked(connection)
        for channel in Channel:
            for state in MethodState:
                metrics.BLOCKED_METHODS.labels(channel.value, state.value).set(
                    counts.get((channel, state), 0)
                )

    async def _answer(
        self, connection: Connection, record: OfferRecord, response: CoachResponse, via: ResponseVia
    ) -> None:
        now = self.clock()
        if not record.coach_offer.answer(response, now):
            return
        if not await store.record_response(connection, record.offer_id, response, via, now):
            return
        await self._offer_settled(connection, record)
        answered = CoachResponded(
            referral_id=record.referral_id,
            offer_id=record.offer_id,
            coach_id=record.coach_id,
            response=response,
            via=via,
            responded_at=now,
        )
        await self._emit(connection, record, answered)
        metrics.ANSWERS.labels(response.value, via.value).inc()
        if response in (CoachResponse.ACCEPTED, CoachResponse.DECLINED):
            metrics.OFFER_TO_ANSWER.labels(response.value).observe(
                max(0.0, (now - record.offered_at).total_seconds())
            )
        log.info("coach answered", extra={**_ids(record.offer_id), "response": response.value})

    async def _emit(
        self, connection: Connection, record: OfferRecord, *events: EventPayload
    ) -> None:
        await self.outbox.put(
            connection,
            *(
                Envelope.wrap(e, source=SOURCE, correlation_id=record.correlation_id)
                for e in events
            ),
        )


def coach_phone(record: OfferRecord) -> str | None:
    """The phone an offer reached its coach on (SMS first, then voice): the number a coach's
    OFF / ON from the page stands for, as a text from it would. None for no phone."""
    for channel in (Channel.SMS, Channel.VOICE):
        for contact in record.contacts:
            if contact.channel is channel and _E164.match(contact.destination):
                return contact.destination
    return None


def _unassigned(notice: notices.NoticeRecord) -> content.Unassigned:
    return content.Unassigned(
        site_short_name=notice.site_short_name,
        unassigned_at=notice.unassigned_at,
        reference=content.short_reference(str(notice.referral_id)),
        urgency=notice.urgency,
        time_zone=notice.site_time_zone,
        reason=notice.reason,
        nobody_reached=notice.nobody_reached,
    )


async def _drop_notice(connection: Connection, notice: notices.NoticeRecord) -> None:
    """A supervisor's notice that is not to go (resolved, her OFF, a blocked method)."""
    await notices.finish(connection, notice.notice_id, MessageState.CANCELLED)
    metrics.PAGES.labels(notice.channel, MessageKind.UNASSIGNED, "cancelled").inc()


_THROTTLE_TIMERS = uuid5(NAMESPACE_URL, "https://handoff.invalid/notify/throttle-ends")


def _throttle_timer(channel: Channel, destination: str) -> UUID:
    """The one timer of a throttled method: setting it again moves it."""
    return uuid5(_THROTTLE_TIMERS, f"{channel.value}:{destination}")


def _ids(offer_id: UUID) -> dict[str, str]:
    return {"offer_id": str(offer_id)}


def _read(reading: str, answer: _Text) -> _Text:
    """Count how a reply was read (never its text), and pass on the answer to it."""
    metrics.SMS_REPLIES.labels(reading).inc()
    log.info("sms reply read", extra={"reading": reading})
    return answer
