"""Follow-up use cases (issue #16, decision 0025): the coach records the visit, the tasks
fall due, the coach records each attempt, and consent is revoked. Each is one database
transaction with its outbox events; contact details are sealed before they are stored
and never leave this module but to the page of the coach an attempt is assigned to.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from handoff_platform import audit as audit_log
from handoff_platform.audit import Accessor
from handoff_platform.database import Connection
from handoff_platform.outbox import Outbox
from handoff_platform.timers import Timer, Timers
from handoff_referral import SCHEMA, SOURCE
from handoff_referral.adapters import follow_up_store as store
from handoff_referral.adapters.contact_vault import (
    ContactVault,
    UnreadableContact,
    VaultNotConfigured,
)
from handoff_referral.domain.follow_ups import (
    CLOSES_TASK,
    ENDS_FOLLOW_UP,
    BadInput,
    Contact,
    TaskState,
    VisitChoice,
    retry_due,
    windows,
)
from handoff_referral.domain.status import Status
from handoff_referral.metrics import CONTACTS_UNREADABLE, FOLLOW_UPS
from handoff_referral.service import Clock, utc_now
from handoff_schemas import Envelope
from handoff_schemas.events import (
    FollowUpAssigned,
    FollowUpAttempted,
    FollowUpConsentRevoked,
    FollowUpDue,
    VisitRecorded,
)
from handoff_schemas.vocabulary import FollowUpResult, RecoveryOutcome

log = logging.getLogger(__name__)

FOLLOW_UP_DUE = "follow_up_due"
"""The timer kind of a task's attempt falling due; the timer's id is the task's."""
VISIT_STATUSES = (Status.ARRIVED, Status.COMPLETED)
"""A visit is recorded once the coach is with the patient: arrived, or completed."""
SHOWN_FIELDS = ("follow_up_callback_phone", "follow_up_preferred_times")
"""What the follow-up page shows of the patient, as the audit trail names it (the entry is
the referral's, so it joins the referral's other entries; `follow_up_` tells the patient's
own number from the ED's `callback_phone`)."""


class VisitPage(StrEnum):
    """What a visit link shows."""

    UNKNOWN = "unknown"  # no accepted offer of that id (yet)
    REPLACED = "replaced"  # the request went to another coach after this one
    TOO_EARLY = "too_early"  # accepted, not yet arrived
    CLOSED = "closed"  # cancelled or expired before a visit was recorded
    OPEN = "open"  # the form
    RECORDED = "recorded"


@dataclass(frozen=True)
class VisitView:
    page: VisitPage
    consent: bool = False
    consent_revoked: bool = False
    follow_up_days: tuple[int, ...] = ()
    site_short_name: str = ""
    saved: bool = False  # this request stored the visit (a concurrent one may have won)


class FollowUpPage(StrEnum):
    """What a follow-up link shows."""

    UNKNOWN = "unknown"
    REPLACED = "replaced"  # given to another coach: no number
    DONE = "done"  # the attempt was recorded, or the task closed: no number
    OPEN = "open"  # the number, the times and the form


@dataclass(frozen=True)
class FollowUpView:
    page: FollowUpPage
    window_days: int = 0
    attempt: int = 0
    state: TaskState | None = None
    contact: Contact | None = None  # only on an OPEN page
    saved: bool = False  # this request stored the attempt
    recorded: store.RecordedAttempt | None = None  # what was stored, when this one was not


class ScheduleChanged(Exception):
    """The site's follow-up schedule is no longer the one the consent statement read out:
    the consent is not to the calls that would be made, so nothing is stored."""


class ContactUnreadable(Exception):
    """The stored contact opens with none of the running FOLLOW_UP_KEYS (a key dropped or
    a rotation run before every replica had the new key); the program is alerted."""


class Replaced(Exception):
    """The link's assignment was replaced: the attempt was given to another coach."""


class Refused(Exception):
    """The change cannot be made in the record's state; the message says why (no PHI)."""


class NoConsent(Exception):
    """There is no follow-up consent to revoke (no visit recorded, or consent not given)."""


@dataclass(frozen=True)
class Revocation:
    tasks_cancelled: int
    # Nothing was left to stop: consent had been revoked before, or a result ended
    # follow-up and deleted the number (the withdrawal is then recorded all the same).
    already: bool


class FollowUpService:
    """Visits and follow-ups. `vault` seals contacts; `clock` is UTC now (tests inject
    one: the tasks' due times follow the visit's recorded time)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        timers: Timers,
        vault: ContactVault,
        clock: Clock = utc_now,
    ) -> None:
        self.pool = pool
        self.outbox = outbox
        self.timers = timers
        self.vault = vault
        self.clock = clock

    # Events consumed

    async def offer_accepted(
        self,
        connection: Connection,
        offer_id: UUID,
        referral_id: UUID,
        coach_id: UUID,
        at: datetime,
    ) -> None:
        """CoachAssigned: the visit link of this offer may record the visit."""
        await store.accept_offer(connection, offer_id, referral_id, coach_id, at)

    async def assigned(self, connection: Connection, event: FollowUpAssigned) -> None:
        """FollowUpAssigned: the latest assignment of an attempt is the one whose link
        shows the number."""
        await store.add_assignment(
            connection,
            event.assignment_id,
            event.task_id,
            event.attempt,
            event.coach_id,
            event.assigned_at,
        )

    # The visit page

    async def visit_view(self, offer_id: UUID) -> VisitView:
        async with self.pool.acquire() as connection:
            offer = await store.accepted_offer(connection, offer_id)
            if offer is None:
                return VisitView(VisitPage.UNKNOWN)
            recorded = await store.visit(connection, offer.referral_id)
        return _visit_view(offer, recorded)

    async def record_visit(self, offer_id: UUID, choice: VisitChoice) -> VisitView:
        """Record the visit of the accepted offer `offer_id`, its tasks when the patient
        consented, and VisitRecorded, in one transaction. A visit already recorded (also by
        a concurrent submit), or a referral not at the bedside, changes nothing: the view
        (`saved` False) says what the page shows. Raises BadInput naming `consent` when the
        contact cannot be sealed (no keys), ScheduleChanged when consent was given to a
        schedule (`choice.shown_schedule`) that is no longer the site's."""
        if choice.consent and not self.vault.configured:
            raise BadInput(
                "consent",
                "follow-up calls cannot be recorded here yet (FOLLOW_UP_KEYS is not set): "
                "call your supervisor",
            )
        now = self.clock()
        async with self.pool.acquire() as connection:
            async with connection.transaction():
                offer = await store.accepted_offer(connection, offer_id, for_update=True)
                if offer is None:
                    return VisitView(VisitPage.UNKNOWN)
                view = _visit_view(offer, await store.visit(connection, offer.referral_id))
                if view.page is not VisitPage.OPEN:
                    return view
                if choice.consent and choice.shown_schedule != offer.follow_up_days:
                    raise ScheduleChanged
                # The insert decides a race: a concurrent submit's visit wins the conflict,
                # and this one stores nothing and says what was recorded.
                if not await store.insert_visit(
                    connection, offer, choice.consent, choice.outcomes, now
                ):
                    return _visit_view(offer, await store.visit(connection, offer.referral_id))
                tasks = 0
                if choice.consent and choice.contact is not None:
                    tasks = await self._schedule(connection, offer, choice.contact, now)
                event = VisitRecorded(
                    referral_id=offer.referral_id,
                    site_id=offer.site_id,
                    coach_id=offer.coach_id,
                    follow_up_consent=choice.consent,
                    outcomes=choice.outcomes,
                    recorded_at=now,
                )
                await self._publish(connection, event, offer.correlation_id)
            await self.timers.changed(connection)
        self.outbox.committed()
        consented = "consented" if choice.consent else "declined"
        FOLLOW_UPS.labels(offer.site_id, f"visit_recorded_{consented}").inc()
        log.info(
            "visit recorded",
            extra={
                "referral_id": str(offer.referral_id),
                "follow_up_consent": choice.consent,
                "follow_up_tasks": tasks,
            },
        )
        return VisitView(VisitPage.RECORDED, consent=choice.consent, saved=True)

    async def _schedule(
        self, connection: Connection, offer: store.AcceptedOffer, contact: Contact, now: datetime
    ) -> int:
        await store.store_contact(connection, offer.referral_id, self.vault.seal(contact))
        visit = await store.visit(connection, offer.referral_id)
        assert visit is not None  # inserted in this transaction
        planned = windows(now, offer.follow_up_days, contact, offer.time_zone)
        task_ids = [uuid4() for _ in planned]
        await store.insert_tasks(connection, visit, task_ids, planned)
        for task_id, window in zip(task_ids, planned, strict=True):
            await self.timers.set(connection, task_id, FOLLOW_UP_DUE, window.opens_at)
        return len(planned)

    # Timers

    async def attempt_due(self, connection: Connection, timer: Timer) -> None:
        """A task's current attempt fell due: FollowUpDue, for matching to assign it. A
        task closed or cancelled meanwhile does nothing (its timer is cancelled without
        waiting for a firing one's lock)."""
        # The timer's id is its task's.
        task = await store.task(connection, timer.timer_id, for_update=True)
        if task is None or task.state is not TaskState.SCHEDULED:
            return
        await store.set_task_state(connection, task.task_id, TaskState.DUE)
        event = FollowUpDue(
            referral_id=task.referral_id,
            task_id=task.task_id,
            site_id=task.site_id,
            window_days=task.window_days,
            attempt=task.attempt,
            coach_id=task.coach_id,
            due_at=task.due_at,
            window_ends_at=task.window_ends_at,
        )
        await self._publish(
            connection, event, await store.correlation_id(connection, task.referral_id)
        )
        FOLLOW_UPS.labels(task.site_id, "due").inc()  # a rolled-back firing is retried
        log.info(
            "follow-up due",
            extra={
                "task_id": str(task.task_id),
                "window_days": task.window_days,
                "attempt": task.attempt,
            },
        )

    # The follow-up page

    async def follow_up_view(
        self, assignment_id: UUID, accessor: Callable[[UUID], Accessor]
    ) -> FollowUpView:
        """What the assignment's link shows. An OPEN view carries the contact, and writes
        one audit entry (`accessor` of the assignment's coach id) in the read's
        transaction."""
        async with self.pool.acquire() as connection, connection.transaction():
            assignment = await store.assignment(connection, assignment_id)
            task = await store.task(connection, assignment.task_id) if assignment else None
            if assignment is None or task is None:
                return FollowUpView(FollowUpPage.UNKNOWN)
            if not assignment.latest:
                return FollowUpView(FollowUpPage.REPLACED, task.window_days, assignment.attempt)
            contact = await self._contact(connection, task.referral_id)
            if not _attempt_open(task, assignment) or contact is None:
                return FollowUpView(
                    FollowUpPage.DONE, task.window_days, assignment.attempt, task.state
                )
            entry = accessor(assignment.coach_id).saw("referral", task.referral_id, SHOWN_FIELDS)
            await audit_log.record(connection, SCHEMA, entry)
        return FollowUpView(
            FollowUpPage.OPEN, task.window_days, assignment.attempt, task.state, contact
        )

    async def record_attempt(
        self,
        assignment_id: UUID,
        result: FollowUpResult,
        outcomes: frozenset[RecoveryOutcome],
    ) -> FollowUpView:
        """Record the assigned attempt's result, publish FollowUpAttempted, and move the
        task on: `no_answer` schedules the next attempt inside the window (domain
        `retry_due`) or closes the task as not reached; `reached` and `readmitted` close
        the task; `wrong_number`, `declined_further_contact` and `deceased` close every
        open task and erase the contact. The contact is erased too once no task is open.
        An attempt no longer open (also one a concurrent submit recorded) changes nothing:
        the view (`saved` False, `recorded` what was stored) says what became of it."""
        now = self.clock()
        async with self.pool.acquire() as connection:
            async with connection.transaction():
                assignment = await store.assignment(connection, assignment_id)
                task = (
                    await store.task(connection, assignment.task_id, for_update=True)
                    if assignment
                    else None
                )
                if assignment is None or task is None:
                    return FollowUpView(FollowUpPage.UNKNOWN)
                if not assignment.latest:
                    return FollowUpView(FollowUpPage.REPLACED, task.window_days, assignment.attempt)
                if not _attempt_open(task, assignment) or not await store.add_attempt(
                    connection, task, assignment.coach_id, result, outcomes, now
                ):
                    # Another submit was stored first (the task row's lock orders them).
                    recorded = await store.recorded_attempt(
                        connection, task.task_id, assignment.attempt
                    )
                    return FollowUpView(
                        FollowUpPage.DONE,
                        task.window_days,
                        assignment.attempt,
                        task.state,
                        recorded=recorded,
                    )
                state = await self._after_attempt(connection, task, result, now)
                event = FollowUpAttempted(
                    referral_id=task.referral_id,
                    task_id=task.task_id,
                    site_id=task.site_id,
                    window_days=task.window_days,
                    attempt=task.attempt,
                    coach_id=assignment.coach_id,
                    result=result,
                    outcomes=outcomes,
                    attempted_at=now,
                )
                await self._publish(
                    connection, event, await store.correlation_id(connection, task.referral_id)
                )
            await self.timers.changed(connection)
        self.outbox.committed()
        FOLLOW_UPS.labels(task.site_id, f"attempted_{result.value}").inc()
        log.info(
            "follow-up attempt recorded",
            extra={"task_id": str(task.task_id), "attempt": task.attempt, "result": result.value},
        )
        return FollowUpView(FollowUpPage.DONE, task.window_days, task.attempt, state, saved=True)

    async def _after_attempt(
        self, connection: Connection, task: store.Task, result: FollowUpResult, now: datetime
    ) -> TaskState:
        if result in ENDS_FOLLOW_UP:
            await self._close_open_tasks(connection, task.referral_id, TaskState.CLOSED, now)
            await store.erase_contact(connection, task.referral_id)
            return TaskState.CLOSED
        state = CLOSES_TASK.get(result, TaskState.NOT_REACHED)
        if result is FollowUpResult.NO_ANSWER:
            contact = await self._contact(connection, task.referral_id)
            zone = await store.time_zone(connection, task.site_id)
            due = (
                retry_due(task.attempt, now, task.window_ends_at, contact, zone)
                if contact is not None
                else None
            )
            if due is not None:
                await store.set_task_state(
                    connection,
                    task.task_id,
                    TaskState.SCHEDULED,
                    attempt=task.attempt + 1,
                    due_at=due,
                )
                await self.timers.set(connection, task.task_id, FOLLOW_UP_DUE, due)
                return TaskState.SCHEDULED
        await store.set_task_state(connection, task.task_id, state, now)
        if not any(t.state.open for t in await store.tasks(connection, task.referral_id)):
            # Minimum necessary: with no attempt left to make, the number is not kept.
            await store.erase_contact(connection, task.referral_id)
        return state

    async def _close_open_tasks(
        self, connection: Connection, referral_id: UUID, state: TaskState, now: datetime
    ) -> int:
        closed = 0
        for task in await store.tasks(connection, referral_id, for_update=True):
            if task.state.open:
                await store.set_task_state(connection, task.task_id, state, now)
                # A firing timer holds its row: it finds the task closed and does nothing.
                await self.timers.cancel_unless_firing(connection, task.task_id)
                closed += 1
        return closed

    async def _contact(self, connection: Connection, referral_id: UUID) -> Contact | None:
        sealed = await store.sealed_contact(connection, referral_id)
        if sealed is None:
            return None
        try:
            return self.vault.open(sealed)
        except (UnreadableContact, VaultNotConfigured):
            # The id only: the sealed bytes and the keys stay out of the log.
            log.error(
                "follow-up contact unreadable with FOLLOW_UP_KEYS",
                extra={"referral_id": str(referral_id)},
            )
            CONTACTS_UNREADABLE.inc()
            raise ContactUnreadable from None

    # Revocation

    async def revoke_by_offer(self, offer_id: UUID) -> Revocation | None:
        """From the visit page: None if the link's offer is unknown. Raises NoConsent."""
        async with self.pool.acquire() as connection:
            offer = await store.accepted_offer(connection, offer_id)
        if offer is None or not offer.latest:
            return None
        return await self.revoke(offer.referral_id, None)

    async def revoke_by_assignment(self, assignment_id: UUID) -> Revocation | None:
        """From the follow-up page: None if the link's assignment is unknown. Raises
        Replaced when it was replaced (the coach it was given to instead can revoke),
        NoConsent."""
        async with self.pool.acquire() as connection:
            assignment = await store.assignment(connection, assignment_id)
            task = await store.task(connection, assignment.task_id) if assignment else None
        if assignment is None or task is None:
            return None
        if not assignment.latest:
            raise Replaced
        return await self.revoke(task.referral_id, None)

    async def revoke(self, referral_id: UUID, site_id: str | None) -> Revocation:
        """The patient withdrew follow-up consent: every open task is cancelled (its timer
        too), the stored contact deleted, and FollowUpConsentRevoked published, in one
        transaction. Revoking again changes nothing. `already` is True when nothing was left
        to stop (revoked before, or no open task and no number). With `site_id`, only that
        site's referral. Raises NoConsent when no consent was recorded."""
        now = self.clock()
        async with self.outbox.transaction(self.pool) as connection:
            visit = await store.visit(connection, referral_id, for_update=True)
            if visit is None or (site_id is not None and visit.site_id != site_id):
                raise NoConsent
            if not visit.follow_up_consent:
                raise NoConsent
            if visit.consent_revoked_at is not None:
                return Revocation(0, already=True)
            cancelled = await self._close_open_tasks(
                connection, referral_id, TaskState.CANCELLED, now
            )
            erased = await store.erase_contact(connection, referral_id)
            # Recorded all the same (the visit page then says so), but reported as already
            # done when a result (wrong number, deceased...) had stopped the calls and deleted
            # the number before: this withdrawal changed nothing the patient would notice.
            nothing_left = cancelled == 0 and not erased
            await store.mark_consent_revoked(connection, referral_id, now)
            event = FollowUpConsentRevoked(
                referral_id=referral_id,
                site_id=visit.site_id,
                tasks_cancelled=cancelled,
                revoked_at=now,
            )
            await self._publish(
                connection, event, await store.correlation_id(connection, referral_id)
            )
        FOLLOW_UPS.labels(visit.site_id, "consent_revoked").inc()
        log.info(
            "follow-up consent revoked",
            extra={"referral_id": str(referral_id), "tasks_cancelled": cancelled},
        )
        return Revocation(cancelled, already=nothing_left)

    async def _publish(self, connection: Connection, event: Any, correlation_id: str) -> None:
        await self.outbox.put(
            connection, Envelope.wrap(event, source=SOURCE, correlation_id=correlation_id)
        )


def _visit_view(offer: store.AcceptedOffer, recorded: store.Visit | None) -> VisitView:
    if not offer.latest:
        return VisitView(VisitPage.REPLACED)
    if recorded is not None:
        return VisitView(
            VisitPage.RECORDED,
            consent=recorded.follow_up_consent,
            consent_revoked=recorded.consent_revoked_at is not None,
        )
    if offer.status in VISIT_STATUSES:
        return VisitView(
            VisitPage.OPEN, follow_up_days=offer.follow_up_days, site_short_name=offer.short_name
        )
    if offer.status is Status.ACCEPTED:
        return VisitView(VisitPage.TOO_EARLY)
    return VisitView(VisitPage.CLOSED)


def _attempt_open(task: store.Task, assignment: store.Assignment) -> bool:
    return task.state is TaskState.DUE and task.attempt == assignment.attempt


async def rotate_keys(connection: Connection, vault: ContactVault, batch: int = 500) -> int:
    """Re-encrypt every stored contact under the vault's first key, a batch per
    transaction; returns how many. Raises UnreadableContact when a row opens with none of
    the keys (nothing of that batch is changed)."""
    count, after = 0, None
    while True:
        async with connection.transaction():
            rows = await store.sealed_contacts_batch(connection, after, batch)
            for referral_id, sealed in rows:
                await store.store_contact(connection, referral_id, vault.reseal(sealed))
        if not rows:
            return count
        count += len(rows)
        after = rows[-1][0]
