"""The referral service's use cases. Each is one transaction: state, timeline and outbox."""

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg

from handoff_platform import audit as audit_log
from handoff_platform.audit import AuditEntry
from handoff_platform.database import Connection
from handoff_platform.outbox import Outbox
from handoff_referral import SCHEMA, SOURCE
from handoff_referral.adapters import postgres as store
from handoff_referral.adapters.key_cache import KeyCache
from handoff_referral.domain.api_keys import parse_key, secret_matches
from handoff_referral.domain.intake import ReferralRequest
from handoff_referral.domain.referral import (
    NO_DETAILS,
    Referral,
    Site,
    StepDetails,
    TimelineStep,
    referral_created,
)
from handoff_referral.domain.status import (
    Status,
    Step,
    check_cancellable,
    observe,
    record_offer_ending,
)
from handoff_referral.metrics import REFERRAL_STEPS, REFERRALS_RECEIVED
from handoff_schemas import Envelope
from handoff_schemas.events import ReferralCancelled, SiteRegistered
from handoff_schemas.vocabulary import CancelReason

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ExternalIdConflict(Exception):
    """The site already sent this external id with a different body."""


class ReferralNotFound(Exception):
    pass


class UnknownReferral(Exception):
    """An event names a referral this service never received: a bug, or another environment."""


class ReferralService:
    def __init__(
        self, pool: asyncpg.Pool, outbox: Outbox, keys: KeyCache, clock: Clock = utc_now
    ) -> None:
        self.pool = pool
        self.outbox = outbox
        self.keys = keys
        self.clock = clock

    async def authenticate(self, token: str) -> Site | None:
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        if cached := self.keys.get(key_id):
            site, secret_sha256 = cached.site, cached.secret_sha256
        else:
            revocations_seen = self.keys.revocations_seen()
            async with self.pool.acquire() as connection:
                found = await store.active_key(connection, key_id)
            if found is None:
                return None
            site, secret_sha256 = found
            self.keys.put(key_id, site, secret_sha256, revocations_seen)
        return site if secret_matches(secret, secret_sha256) else None

    async def submit(
        self, site: Site, request: ReferralRequest, correlation_id: str | None
    ) -> tuple[Referral, bool]:
        """Returns the referral and whether it is new; a replay returns the original."""
        referral_id = uuid4()
        correlation_id = correlation_id or str(referral_id)
        now = self.clock()
        event = Envelope.wrap(
            referral_created(referral_id, site, request, now),
            source=SOURCE,
            correlation_id=correlation_id,
        )
        async with self.pool.acquire() as connection:
            created = await store.insert_referral(
                connection, self.outbox, referral_id, site.site_id, request, event, now
            )
            if not created:
                return await self._replay(connection, site, request), False
        self.outbox.committed()
        referral = Referral(
            referral_id=referral_id,
            site_id=site.site_id,
            request=request,
            status=Status.RECEIVED,
            received_at=now,
            updated_at=now,
            timeline=(TimelineStep(Step.RECEIVED, now),),
            correlation_id=correlation_id,
        )
        REFERRALS_RECEIVED.labels(site.site_id, site.state, request.urgency.value).inc()
        log.info(
            "referral received", extra={"referral_id": str(referral_id), "site_id": site.site_id}
        )
        return referral, True

    async def _replay(
        self, connection: Connection, site: Site, request: ReferralRequest
    ) -> Referral:
        existing = await store.find_by_external_id(connection, site.site_id, request.external_id)
        assert existing is not None, "the insert conflicted, so the row exists"
        referral_id, fingerprint = existing
        if fingerprint != request.fingerprint():
            raise ExternalIdConflict(request.external_id)
        referral = await store.get_referral(connection, site.site_id, referral_id)
        assert referral is not None
        return referral

    async def get(self, site: Site, referral_id: UUID, audit: AuditEntry | None = None) -> Referral:
        """The site's referral; with `audit`, the look is recorded in the read's own
        transaction (nothing is recorded for a referral not found). Raises
        ReferralNotFound."""
        async with self.pool.acquire() as connection:
            if audit is None:
                referral = await store.get_referral(connection, site.site_id, referral_id)
            else:
                async with connection.transaction():
                    referral = await store.get_referral(connection, site.site_id, referral_id)
                    if referral is not None:
                        await audit_log.record(connection, SCHEMA, audit)
        if referral is None:
            raise ReferralNotFound(referral_id)
        return referral

    async def list(
        self,
        site: Site,
        status: Status | None,
        since: datetime | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
        audit: Callable[[Referral], AuditEntry] | None = None,
    ) -> tuple[list[Referral], bool]:
        """Up to `limit` of the site's referrals in the order received, and whether more
        follow. With `audit`, each referral returned is one entry of the audit trail,
        written in the read's own transaction."""
        async with self.pool.acquire() as connection, connection.transaction():
            found = await store.list_referrals(
                connection, site.site_id, status, since, after, limit + 1
            )
            page = found[:limit]
            if audit is not None:
                for referral in page:
                    await audit_log.record(connection, SCHEMA, audit(referral))
        return page, len(found) > limit

    async def cancel(self, site: Site, referral_id: UUID, reason: CancelReason) -> Referral:
        """Withdraws the request; cancelling a cancelled referral again changes nothing."""
        async with self.outbox.transaction(self.pool) as connection:
            referral = await store.get_referral(
                connection, site.site_id, referral_id, for_update=True
            )
            if referral is None:
                raise ReferralNotFound(referral_id)
            if not check_cancellable(referral.status):
                return referral
            now = self.clock()
            await store.record_step(
                connection,
                referral_id,
                Step.CANCELLED,
                now,
                Status.CANCELLED,
                now,
                cancel_reason=reason.value,
            )
            event = ReferralCancelled(referral_id=referral_id, reason=reason, cancelled_at=now)
            await self.outbox.put(
                connection,
                Envelope.wrap(event, source=SOURCE, correlation_id=referral.correlation_id),
            )
            cancelled = await store.get_referral(connection, site.site_id, referral_id)
        assert cancelled is not None
        REFERRAL_STEPS.labels(site.site_id, Step.CANCELLED.value).inc()
        log.info(
            "referral cancelled", extra={"referral_id": str(referral_id), "reason": reason.value}
        )
        return cancelled

    async def observe_step(
        self,
        connection: Connection,
        referral_id: UUID,
        step: Status,
        at: datetime,
        details: StepDetails = NO_DETAILS,
    ) -> None:
        """A status step reported by matching or notify, at `at` (UTC), inside the consumer's
        transaction, with what it says beyond its name. An offer of a batch whose step is
        recorded adds nothing: a broadcast is one `offered` step for all its coaches.
        Raises UnknownReferral for a referral this service never received."""
        site_id, status, recorded = await self._lock(connection, referral_id)
        if details.batch_id is not None and await store.batch_recorded(
            connection, referral_id, details.batch_id
        ):
            return
        outcome = observe(status, recorded, step)
        if outcome.record:
            await store.record_step(
                connection,
                referral_id,
                Step(step),
                at,
                outcome.new_status,
                self.clock(),
                details=details,
            )
            self._recorded(referral_id, site_id, Step(step), outcome.new_status)

    async def observe_offer_ending(
        self, connection: Connection, referral_id: UUID, ending: Step, at: datetime
    ) -> None:
        """An offer of the referral ended without a coach (`ending` is one of OFFER_ENDINGS),
        at `at` (UTC), inside the consumer's transaction. Raises UnknownReferral."""
        site_id, status, _ = await self._lock(connection, referral_id)
        if record_offer_ending(status):
            await store.record_step(connection, referral_id, ending, at, status, self.clock())
            self._recorded(referral_id, site_id, ending, status)

    async def _lock(
        self, connection: Connection, referral_id: UUID
    ) -> tuple[str, Status, frozenset[Status]]:
        current = await store.lock_status(connection, referral_id)
        if current is None:
            raise UnknownReferral(referral_id)
        return current

    @staticmethod
    def _recorded(referral_id: UUID, site_id: str, step: Step, status: Status) -> None:
        REFERRAL_STEPS.labels(site_id, step.value).inc()
        log.info(
            "referral step",
            extra={"referral_id": str(referral_id), "step": step.value, "status": status.value},
        )


async def register_site(connection: Connection, site: Site, now: datetime | None = None) -> bool:
    """Register a site, and tell the other services its facts (SiteRegistered), in one
    transaction; False, and nothing sent, if it was already registered."""
    async with connection.transaction():
        if not await store.add_site(connection, site):
            return False
        await _announce_site(connection, site, now)
    return True


async def update_site(connection: Connection, site: Site, now: datetime | None = None) -> bool:
    """Change a registered site's name, short name, state or time zone to `site`'s, in one
    transaction with SiteRegistered (its facts as they now stand: latest wins) and every
    replica's key cache told to drop the site's keys. Referrals received from then on
    carry the new facts; those already offered keep the ones they were received with.
    False, and nothing sent, if the site already has these facts or is not registered."""
    async with connection.transaction():
        if not await store.update_site(connection, site):
            return False
        await _announce_site(connection, site, now)
        await store.forget_cached_keys(connection, site.site_id)
    return True


async def _announce_site(connection: Connection, site: Site, now: datetime | None) -> None:
    registered = SiteRegistered(site=site.facts(), registered_at=now or utc_now())
    envelope = Envelope.wrap(registered, source=SOURCE, correlation_id=f"site:{site.site_id}")
    await Outbox(SCHEMA).put(connection, envelope)
