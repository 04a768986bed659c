"""PostgreSQL: the offers notify paged, their messages and the coaches' answers."""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import asyncpg

from handoff_notify import SCHEMA
from handoff_notify.adapters.send_state import SendStates
from handoff_notify.domain.content import MessageKind
from handoff_notify.domain.delivery import MessageState
from handoff_notify.domain.offer import CoachOffer, OfferState
from handoff_notify.domain.reply_codes import REUSE_AFTER, choose_code
from handoff_notify.domain.throttle import RecentSends
from handoff_platform.database import Connection, migrate_database
from handoff_schemas.events import ContactPoint, OfferBriefing, OfferMade, ReferralUpdated
from handoff_schemas.vocabulary import (
    Channel,
    CoachResponse,
    PageFailure,
    ResponseVia,
    Tier,
    Urgency,
    WithdrawReason,
)

MIGRATIONS = "handoff_notify.adapters.migrations"


async def apply_migrations(database_url: str) -> list[str]:
    return await migrate_database(database_url, SCHEMA, MIGRATIONS)


@dataclass
class OfferRecord:
    offer_id: UUID
    referral_id: UUID
    coach_id: UUID
    correlation_id: str
    site_id: str
    site_short_name: str
    urgency: Urgency
    tier: Tier
    briefing: OfferBriefing
    contacts: tuple[ContactPoint, ...]
    offered_at: datetime
    coach_offer: CoachOffer
    site_time_zone: str | None = None  # IANA; None for offers made before sites had one


@dataclass(frozen=True)
class MessageRecord:
    message_id: UUID
    offer_id: UUID
    kind: MessageKind
    contact_index: int
    channel: Channel
    destination: str
    state: MessageState
    attempts: int
    sending_since: datetime | None
    provider_ref: str | None


_OFFER_COLUMNS = """offer_id, referral_id, coach_id, correlation_id, site_id, site_short_name,
    urgency, tier, briefing, contacts, offered_at, expires_at, state, withdraw_reason,
    arrival_deadline, page_deadline, site_time_zone, paged_at"""
_MESSAGE_COLUMNS = """message_id, offer_id, kind, contact_index, channel, destination, state,
    attempts, sending_since, provider_ref"""
_SENDS = SendStates(f"{SCHEMA}.messages", "message_id", on_sending="sending_since = now()")
mark_sending = _SENDS.mark_sending
retry_later = _SENDS.retry_later
next_due = _SENDS.next_due


async def save_offer(
    connection: Connection, offer: OfferMade, correlation_id: str, offered_at: datetime
) -> bool:
    """Store a new offer; False if it was already known."""
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.offers (offer_id, referral_id, coach_id, correlation_id, site_id,
                site_short_name, urgency, tier, briefing, contacts, offered_at, expires_at, state,
                page_deadline, site_time_zone)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12, $13, $14,
                    $15)
            ON CONFLICT (offer_id) DO NOTHING RETURNING true""",
        offer.offer_id,
        offer.referral_id,
        offer.coach_id,
        correlation_id,
        offer.site_id,
        offer.site_short_name,
        offer.urgency.value,
        offer.tier.value,
        offer.briefing.model_dump_json(),
        json.dumps([c.model_dump(mode="json") for c in offer.contacts]),
        offered_at,
        offer.expires_at,
        OfferState.OPEN.value,
        offer.page_deadline,
        offer.site_time_zone,
    )
    return bool(inserted)


async def offer(
    connection: Connection, offer_id: UUID, *, lock: bool = False
) -> OfferRecord | None:
    row = await connection.fetchrow(
        f"SELECT {_OFFER_COLUMNS} FROM {SCHEMA}.offers WHERE offer_id = $1"
        + (" FOR UPDATE" if lock else ""),
        offer_id,
    )
    return None if row is None else _offer(row)


async def offers_of_referral(connection: Connection, referral_id: UUID) -> list[OfferRecord]:
    """Every offer of the referral, each row locked (FOR UPDATE) whatever its state: a
    transaction moving one of them (an assignment) is waited for and its result read."""
    rows = await connection.fetch(
        f"""SELECT {_OFFER_COLUMNS} FROM {SCHEMA}.offers WHERE referral_id = $1
            ORDER BY offer_id FOR UPDATE""",
        referral_id,
    )
    return [_offer(row) for row in rows]


async def update_briefing(
    connection: Connection, offer_id: UUID, briefing: OfferBriefing, urgency: Urgency
) -> None:
    """What the coach's page shows of the referral, as the ED last changed it."""
    await connection.execute(
        f"""UPDATE {SCHEMA}.offers SET briefing = $2::jsonb, urgency = $3, updated_at = now()
            WHERE offer_id = $1""",
        offer_id,
        briefing.model_dump_json(),
        urgency.value,
    )


async def lock_referral(connection: Connection, referral_id: UUID) -> None:
    """Hold the referral's lock to the end of the transaction. An offer being saved and an
    ED change being applied both take it first, so whichever commits second sees the other
    (without it, each could miss the other's uncommitted row and the page keep the old bed)."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"notify-referral:{referral_id}"
    )


async def remember_update(connection: Connection, update: ReferralUpdated) -> ReferralUpdated:
    """Merge the ED's change into those heard before for its referral, in the order heard
    (the referral's partition order, which is the referral service's): a field it carries
    replaces the older value. Returns the merge."""
    merged = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.referral_updates AS known (referral_id, changes, updated_at)
            VALUES ($1, $2::jsonb, $3)
            ON CONFLICT (referral_id) DO UPDATE
                SET changes = known.changes || EXCLUDED.changes,
                    updated_at = greatest(known.updated_at, EXCLUDED.updated_at)
            RETURNING changes""",
        update.referral_id,
        update.model_dump_json(exclude_none=True),
        update.updated_at,
    )
    return ReferralUpdated.model_validate_json(merged)


async def referral_update(connection: Connection, referral_id: UUID) -> ReferralUpdated | None:
    """The ED's changes to the referral so far, merged (`remember_update`), if any."""
    merged = await connection.fetchval(
        f"SELECT changes FROM {SCHEMA}.referral_updates WHERE referral_id = $1", referral_id
    )
    return None if merged is None else ReferralUpdated.model_validate_json(merged)


async def remember_cancelled(connection: Connection, referral_id: UUID, at: datetime) -> None:
    """The ED cancelled the referral at `at` (UTC); a second report changes nothing."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.cancelled_referrals (referral_id, cancelled_at)
            VALUES ($1, $2) ON CONFLICT (referral_id) DO NOTHING""",
        referral_id,
        at,
    )


async def was_cancelled(connection: Connection, referral_id: UUID) -> bool:
    """Whether notify has heard that the ED cancelled the referral."""
    found: bool = await connection.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.cancelled_referrals WHERE referral_id = $1)",
        referral_id,
    )
    return found


async def offers(connection: Connection, offer_ids: Iterable[UUID]) -> dict[UUID, OfferRecord]:
    """Several offers in one round trip, by id; ids of no offer are left out."""
    rows = await connection.fetch(
        f"SELECT {_OFFER_COLUMNS} FROM {SCHEMA}.offers WHERE offer_id = ANY($1::uuid[])",
        list(offer_ids),
    )
    return {row["offer_id"]: _offer(row) for row in rows}


async def lock_free_offers(
    connection: Connection, offer_ids: Iterable[UUID]
) -> dict[UUID, OfferRecord]:
    """Lock, for this transaction, those of these offers no other transaction holds, and
    return them by id; never waits. For a caller already holding its messages' rows: a
    transaction holding an offer may be waiting for those (see docs/decisions/0021)."""
    rows = await connection.fetch(
        f"""SELECT {_OFFER_COLUMNS} FROM {SCHEMA}.offers WHERE offer_id = ANY($1::uuid[])
            ORDER BY offer_id FOR UPDATE SKIP LOCKED""",
        list(offer_ids),
    )
    return {row["offer_id"]: _offer(row) for row in rows}


async def save_offer_state(connection: Connection, record: OfferRecord) -> None:
    state = record.coach_offer
    await connection.execute(
        f"""UPDATE {SCHEMA}.offers
            SET state = $2, withdraw_reason = $3, arrival_deadline = $4, updated_at = now()
            WHERE offer_id = $1""",
        record.offer_id,
        state.state.value,
        state.withdraw_reason.value if state.withdraw_reason else None,
        state.arrival_deadline,
    )


async def add_message(
    connection: Connection,
    message_id: UUID,
    offer_id: UUID,
    kind: MessageKind,
    contact_index: int,
    contact: ContactPoint,
    due_at: datetime,
) -> bool:
    """Queue a message; False if this (offer, kind, contact) already has one."""
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.messages
                (message_id, offer_id, kind, contact_index, channel, destination, state, due_at)
            VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7)
            ON CONFLICT (offer_id, kind, contact_index) DO NOTHING RETURNING true""",
        message_id,
        offer_id,
        kind.value,
        contact_index,
        contact.channel.value,
        contact.destination,
        due_at,
    )
    return bool(inserted)


async def messages_of(connection: Connection, offer_id: UUID) -> list[MessageRecord]:
    rows = await connection.fetch(
        f"""SELECT {_MESSAGE_COLUMNS} FROM {SCHEMA}.messages
            WHERE offer_id = $1 ORDER BY created_at, contact_index""",
        offer_id,
    )
    return [_message(r) for r in rows]


async def message(
    connection: Connection, message_id: UUID, *, lock: bool = False
) -> MessageRecord | None:
    row = await connection.fetchrow(
        f"SELECT {_MESSAGE_COLUMNS} FROM {SCHEMA}.messages WHERE message_id = $1"
        + (" FOR UPDATE" if lock else ""),
        message_id,
    )
    return None if row is None else _message(row)


async def message_by_provider_ref(
    connection: Connection, provider_ref: str
) -> MessageRecord | None:
    row = await connection.fetchrow(
        f"""SELECT {_MESSAGE_COLUMNS} FROM {SCHEMA}.messages
            WHERE provider_ref = $1 FOR UPDATE""",
        provider_ref,
    )
    return None if row is None else _message(row)


async def lock_provider_ref(connection: Connection, provider_ref: str) -> None:
    """Serialise, until the transaction ends, every transaction about one provider reference.

    A delivery report that finds no message keeps itself; a send that stores the
    reference takes any kept report. Both take this lock first, so whichever commits
    second sees the other's write and the report is applied exactly once.
    """
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"notify-ref:{provider_ref}"
    )


@dataclass(frozen=True)
class EarlyReport:
    """A provider's final delivery report kept until its message's reference is stored."""

    delivered: bool
    error_code: str | None


async def keep_early_report(
    connection: Connection, provider_ref: str, report: EarlyReport, keep_for_seconds: float
) -> int:
    """Keep the first report for `provider_ref`; drop kept reports older than
    `keep_for_seconds`. Returns how many expired reports were dropped."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.early_delivery_reports (provider_ref, delivered, error_code)
            VALUES ($1, $2, $3) ON CONFLICT (provider_ref) DO NOTHING""",
        provider_ref,
        report.delivered,
        report.error_code,
    )
    expired = await connection.fetchval(
        f"""WITH gone AS (
                DELETE FROM {SCHEMA}.early_delivery_reports
                WHERE received_at < now() - make_interval(secs => $1) RETURNING 1)
            SELECT count(*) FROM gone""",
        keep_for_seconds,
    )
    return int(expired)


async def take_early_report(connection: Connection, provider_ref: str) -> EarlyReport | None:
    """The kept report for `provider_ref`, removed; None if none was kept."""
    row = await connection.fetchrow(
        f"""DELETE FROM {SCHEMA}.early_delivery_reports WHERE provider_ref = $1
            RETURNING delivered, error_code""",
        provider_ref,
    )
    return None if row is None else EarlyReport(row["delivered"], row["error_code"])


async def claim_due(connection: Connection, limit: int) -> list[MessageRecord]:
    """Lock due pending messages for this transaction; other replicas skip them."""
    return [_message(r) for r in await _SENDS.claim_due(connection, _MESSAGE_COLUMNS, limit)]


async def claim_lost_sends(connection: Connection, limit: int) -> list[MessageRecord]:
    """Messages left `sending` past their deadline: their sender died or lost the answer."""
    rows = await connection.fetch(
        f"""SELECT {_MESSAGE_COLUMNS} FROM {SCHEMA}.messages
            WHERE state = 'sending' AND sending_deadline <= now()
            ORDER BY sending_deadline LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )
    return [_message(r) for r in rows]


_ONE_PHONE = (Channel.SMS.value, Channel.VOICE.value)


async def recent_sends(
    connection: Connection, channel: Channel, destination: str, since: datetime
) -> RecentSends:
    """What went to a destination after `since`, a phone's texts and calls together
    (fresh29b saw three texts then three calls to one number within a ceiling of 3),
    counting sends still in flight (a message claimed earlier in the same batch is one)
    and sends failed after they went (STOP fails the pages it answers: fresh29 saw a fourth
    page in the quarter hour go out after STOP and START), summed up here rather than in
    Python."""
    channels = _ONE_PHONE if channel.value in _ONE_PHONE else (channel.value,)
    row = await connection.fetchrow(
        f"""SELECT count(*) FILTER (WHERE kind = 'offer') AS offers,
                   count(*) FILTER (WHERE kind <> 'offer') AS notices,
                   min(coalesce(sent_at, sending_since)) FILTER (WHERE kind = 'offer') AS oldest
            FROM {SCHEMA}.messages
            WHERE channel = ANY($1::text[]) AND destination = $2 AND created_at >= $3
              AND (state IN ('sending', 'sent', 'delivered') OR sent_at IS NOT NULL)
              AND coalesce(sent_at, sending_since) > $3""",
        list(channels),
        destination,
        since,
    )
    assert row is not None  # an aggregate always answers one row
    return RecentSends(row["offers"], row["notices"], row["oldest"])


async def mark_throttled(
    connection: Connection, channel: Channel, destination: str, until: datetime, now: datetime
) -> bool:
    """The method's offer pages are over their ceiling until `until` (UTC); False if it was
    already marked (matching has been told)."""
    marked = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.throttled_methods (channel, destination, until, since)
            VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
        channel.value,
        destination,
        until,
        now,
    )
    return bool(marked)


async def is_throttled(connection: Connection, channel: Channel, destination: str) -> bool:
    """Whether the method's offer pages are over their ceiling now."""
    found = await connection.fetchval(
        f"SELECT true FROM {SCHEMA}.throttled_methods WHERE channel = $1 AND destination = $2",
        channel.value,
        destination,
    )
    return bool(found)


async def end_throttle(connection: Connection, channel: Channel, destination: str) -> bool:
    """The method's window has a slot again; False if it was not marked."""
    return await _forget_method(connection, "throttled_methods", channel, destination)


async def postpone_deadline(connection: Connection, message_id: UUID, seconds: float) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.messages SET sending_deadline = now() + make_interval(secs => $2)
            WHERE message_id = $1""",
        message_id,
        seconds,
    )


async def mark_sent(
    connection: Connection, message_id: UUID, provider_ref: str | None, delivered: bool
) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.messages
            SET state = $2, provider_ref = coalesce($3, provider_ref), sent_at = now(),
                sending_deadline = NULL, finished_at = CASE WHEN $4 THEN now() END
            WHERE message_id = $1""",
        message_id,
        (MessageState.DELIVERED if delivered else MessageState.SENT).value,
        provider_ref,
        delivered,
    )


async def mark_delivered(connection: Connection, message_id: UUID) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.messages SET state = 'delivered', finished_at = now()
            WHERE message_id = $1""",
        message_id,
    )


async def finish(
    connection: Connection,
    message_id: UUID,
    state: MessageState,
    failure: PageFailure | None = None,
) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.messages
            SET state = $2, failure = $3, sending_deadline = NULL, finished_at = now()
            WHERE message_id = $1""",
        message_id,
        state.value,
        failure.value if failure else None,
    )


async def cancel_pending(connection: Connection, offer_id: UUID) -> None:
    await connection.execute(
        f"""UPDATE {SCHEMA}.messages SET state = 'cancelled', finished_at = now()
            WHERE offer_id = $1 AND state = 'pending' AND kind = 'offer'""",
        offer_id,
    )


async def record_response(
    connection: Connection,
    offer_id: UUID,
    response: CoachResponse,
    via: ResponseVia,
    at: datetime,
) -> bool:
    inserted = await connection.fetchval(
        f"""INSERT INTO {SCHEMA}.responses (offer_id, response, via, responded_at)
            VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
        offer_id,
        response.value,
        via.value,
        at,
    )
    return bool(inserted)


async def mark_paged(connection: Connection, offer_id: UUID, at: datetime) -> None:
    """The offer's first page reached a provider at `at` (a later page changes nothing)."""
    await connection.execute(
        f"UPDATE {SCHEMA}.offers SET paged_at = coalesce(paged_at, $2) WHERE offer_id = $1",
        offer_id,
        at,
    )


def _offer(row: asyncpg.Record) -> OfferRecord:
    reason = row["withdraw_reason"]
    return OfferRecord(
        offer_id=row["offer_id"],
        referral_id=row["referral_id"],
        coach_id=row["coach_id"],
        correlation_id=row["correlation_id"],
        site_id=row["site_id"],
        site_short_name=row["site_short_name"],
        urgency=Urgency(row["urgency"]),
        tier=Tier(row["tier"]),
        briefing=OfferBriefing.model_validate_json(row["briefing"]),
        contacts=tuple(ContactPoint.model_validate(c) for c in json.loads(row["contacts"])),
        offered_at=row["offered_at"],
        coach_offer=CoachOffer(
            OfferState(row["state"]),
            row["expires_at"],
            WithdrawReason(reason) if reason else None,
            row["arrival_deadline"],
            row["page_deadline"],
            row["paged_at"],
        ),
        site_time_zone=row["site_time_zone"],
    )


def _message(row: asyncpg.Record) -> MessageRecord:
    return MessageRecord(
        message_id=row["message_id"],
        offer_id=row["offer_id"],
        kind=MessageKind(row["kind"]),
        contact_index=row["contact_index"],
        channel=Channel(row["channel"]),
        destination=row["destination"],
        state=MessageState(row["state"]),
        attempts=row["attempts"],
        sending_since=row["sending_since"],
        provider_ref=row["provider_ref"],
    )


async def accepted_via(connection: Connection, offer_id: UUID) -> ResponseVia | None:
    """How the coach accepted the offer, if they did."""
    via = await connection.fetchval(
        f"SELECT via FROM {SCHEMA}.responses WHERE offer_id = $1 AND response = $2",
        offer_id,
        CoachResponse.ACCEPTED.value,
    )
    return None if via is None else ResponseVia(via)


def reached(messages: Sequence[MessageRecord]) -> MessageRecord | None:
    """The offer page that most recently reached the coach, to send its follow-ups the same way."""
    for candidate in reversed(messages):
        if candidate.kind is MessageKind.OFFER and candidate.state in (
            MessageState.SENT,
            MessageState.DELIVERED,
        ):
            return candidate
    return None


# Reply codes


@dataclass(frozen=True)
class PhoneOffer:
    """An offer paged by SMS to one phone within the day, with its reply code."""

    record: OfferRecord
    code: str
    paged_at: datetime


async def assign_reply_code(
    connection: Connection, destination: str, offer_id: UUID, now: datetime
) -> tuple[str, bool]:
    """The offer's reply code on this phone, and whether its page shows it (always, since
    decision 0020); assigned on first call. Serialised per phone, so two replicas
    paging one coach at once cannot hand out one code twice."""
    await lock_phones(connection, [destination])
    existing = await reply_code(connection, destination, offer_id)
    if existing is not None:
        return existing
    rows = await connection.fetch(
        f"""SELECT r.code, max(r.assigned_at) AS used,
                   bool_or(o.state IN ('open', 'accepted') AND o.expires_at > $2) AS held
            FROM {SCHEMA}.reply_codes r JOIN {SCHEMA}.offers o USING (offer_id)
            WHERE r.destination = $1 AND (r.assigned_at > $3 OR o.state IN ('open', 'accepted'))
            GROUP BY r.code""",
        destination,
        now,
        now - REUSE_AFTER,
    )
    held = {row["code"] for row in rows if row["held"]}
    code = choose_code({row["code"]: row["used"] for row in rows}, held, now)
    shown = True  # every offer SMS names its code (decision 0020); older rows may not
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.reply_codes (destination, offer_id, code, shown, assigned_at)
            VALUES ($1, $2, $3, $4, $5)""",
        destination,
        offer_id,
        code,
        shown,
        now,
    )
    return code, shown


async def lock_phones(connection: Connection, destinations: Sequence[str]) -> None:
    """Hold each phone's reply-code lock to the end of the transaction, taken in sorted
    order, so that two replicas claiming pages to the same phones cannot deadlock."""
    if not destinations:
        return
    await connection.execute(
        """SELECT pg_advisory_xact_lock(hashtext('notify-reply-code:' || phone))
           FROM (SELECT DISTINCT unnest($1::text[]) AS phone ORDER BY 1) AS phones""",
        sorted(set(destinations)),
    )


async def reply_code(
    connection: Connection, destination: str, offer_id: UUID
) -> tuple[str, bool] | None:
    row = await connection.fetchrow(
        f"""SELECT code, shown FROM {SCHEMA}.reply_codes
            WHERE destination = $1 AND offer_id = $2""",
        destination,
        offer_id,
    )
    return None if row is None else (row["code"], row["shown"])


async def offers_paged_to(connection: Connection, phone: str, now: datetime) -> list[PhoneOffer]:
    """Offers whose SMS page reached a provider for this phone in the last day, oldest
    first, locked: what a reply from the phone can be about."""
    columns = ", ".join("o." + c.strip() for c in _OFFER_COLUMNS.split(","))
    rows = await connection.fetch(
        f"""SELECT {columns}, r.code, m.sent_at AS sms_paged_at
            FROM {SCHEMA}.reply_codes r
            JOIN {SCHEMA}.offers o USING (offer_id)
            JOIN {SCHEMA}.messages m ON m.offer_id = r.offer_id AND m.kind = 'offer'
                 AND m.channel = 'sms' AND m.destination = r.destination
            WHERE r.destination = $1 AND r.assigned_at > $2 AND m.sent_at IS NOT NULL
            ORDER BY m.sent_at FOR UPDATE OF o""",
        phone,
        now - REUSE_AFTER,
    )
    return [PhoneOffer(_offer(row), row["code"], row["sms_paged_at"]) for row in rows]


async def open_offers_of_phone(connection: Connection, phone: str) -> list[OfferRecord]:
    """Open offers of the coaches whose roster lists `phone`, however they were paged (an
    SMS refused at the phone's ceiling moves the page to email: fresh34a's OFF left those
    open), oldest first, each row locked."""
    rows = await connection.fetch(
        f"""SELECT {_OFFER_COLUMNS} FROM {SCHEMA}.offers
            WHERE state = 'open' AND coach_id IN (
                SELECT coach_id FROM {SCHEMA}.coach_phones WHERE phone = $1)
            ORDER BY offered_at, offer_id FOR UPDATE""",
        phone,
    )
    return [_offer(row) for row in rows]


async def open_pages_to(
    connection: Connection, channel: Channel, destination: str
) -> list[MessageRecord]:
    """Offer pages out on this contact method whose offers are still open."""
    rows = await connection.fetch(
        f"""SELECT {", ".join("m." + c.strip() for c in _MESSAGE_COLUMNS.split(","))}
            FROM {SCHEMA}.messages m JOIN {SCHEMA}.offers o USING (offer_id)
            WHERE m.channel = $1 AND m.destination = $2 AND m.kind = 'offer'
              AND m.state IN ('sent', 'delivered') AND o.state = 'open'
            ORDER BY m.created_at FOR UPDATE OF m""",
        channel.value,
        destination,
    )
    return [_message(r) for r in rows]


async def first_pages_out(connection: Connection, offer_ids: Iterable[UUID]) -> set[UUID]:
    """Which of these offers already had a page reach a provider."""
    rows = await connection.fetch(
        f"""SELECT DISTINCT offer_id FROM {SCHEMA}.messages
            WHERE offer_id = ANY($1::uuid[]) AND kind = 'offer' AND sent_at IS NOT NULL""",
        list(offer_ids),
    )
    return {row["offer_id"] for row in rows}


# Contact methods no message may go to


class MethodState(StrEnum):
    OPTED_OUT = "opted_out"  # the coach texted STOP (or another carrier opt-out keyword)
    UNREACHABLE = "unreachable"  # the provider said no message can ever be delivered


@dataclass(frozen=True)
class BlockedMethod:
    channel: Channel
    destination: str
    state: MethodState
    reason: str
    since: datetime


async def block_method(
    connection: Connection,
    channel: Channel,
    destination: str,
    state: MethodState,
    reason: str,
    now: datetime,
) -> None:
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.contact_methods (channel, destination, state, reason, since)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (channel, destination) DO UPDATE
            SET state = excluded.state, reason = excluded.reason, since = excluded.since""",
        channel.value,
        destination,
        state.value,
        reason,
        now,
    )


async def unblock_method(connection: Connection, channel: Channel, destination: str) -> bool:
    """Put the method back in good standing; False if it was not blocked."""
    return await _forget_method(connection, "contact_methods", channel, destination)


async def _forget_method(
    connection: Connection, table: str, channel: Channel, destination: str
) -> bool:
    """Delete the method's row of `table` (one of notify's tables keyed by channel and
    destination); False if there was none."""
    deleted = await connection.fetchval(
        f"""DELETE FROM {SCHEMA}.{table} WHERE channel = $1 AND destination = $2
            RETURNING true""",
        channel.value,
        destination,
    )
    return bool(deleted)


async def blocked_methods(
    connection: Connection, methods: Iterable[tuple[Channel, str]]
) -> dict[tuple[Channel, str], BlockedMethod]:
    """Of these (channel, destination) pairs, the blocked ones."""
    pairs = list(methods)
    rows = await connection.fetch(
        f"""SELECT channel, destination, state, reason, since FROM {SCHEMA}.contact_methods
            WHERE (channel, destination) IN
                  (SELECT * FROM unnest($1::text[], $2::text[]))""",
        [channel.value for channel, _ in pairs],
        [destination for _, destination in pairs],
    )
    found = [_blocked(row) for row in rows]
    return {(method.channel, method.destination): method for method in found}


async def list_blocked(connection: Connection, state: MethodState | None) -> list[BlockedMethod]:
    """Blocked contact methods, newest first, of one state or both."""
    rows = await connection.fetch(
        f"""SELECT channel, destination, state, reason, since FROM {SCHEMA}.contact_methods
            WHERE $1::text IS NULL OR state = $1 ORDER BY since DESC""",
        state.value if state else None,
    )
    return [_blocked(row) for row in rows]


async def count_blocked(connection: Connection) -> dict[tuple[Channel, MethodState], int]:
    rows = await connection.fetch(
        f"""SELECT channel, state, count(*) AS methods FROM {SCHEMA}.contact_methods
            GROUP BY channel, state"""
    )
    return {(Channel(row["channel"]), MethodState(row["state"])): row["methods"] for row in rows}


def _blocked(row: asyncpg.Record) -> BlockedMethod:
    return BlockedMethod(
        Channel(row["channel"]),
        row["destination"],
        MethodState(row["state"]),
        row["reason"],
        row["since"],
    )


# Whose numbers are a coach's


async def replace_coach_phones(
    connection: Connection, coach_id: UUID, phones: Sequence[str], changed_at: datetime
) -> None:
    """The coach's phones are now exactly `phones` (none: no longer a coach's)."""
    await connection.execute(f"DELETE FROM {SCHEMA}.coach_phones WHERE coach_id = $1", coach_id)
    await connection.executemany(
        f"""INSERT INTO {SCHEMA}.coach_phones (coach_id, phone, changed_at) VALUES ($1, $2, $3)
            ON CONFLICT DO NOTHING""",
        [(coach_id, phone, changed_at) for phone in phones],
    )


async def is_coach_phone(connection: Connection, phone: str) -> bool:
    """Whether the roster lists `phone` for a coach, or an offer was paged to it by SMS (an
    offer's contacts are the roster's as matching made it)."""
    found: bool = await connection.fetchval(
        f"""SELECT EXISTS (SELECT 1 FROM {SCHEMA}.coach_phones WHERE phone = $1)
                OR EXISTS (SELECT 1 FROM {SCHEMA}.reply_codes WHERE destination = $1)""",
        phone,
    )
    return found


async def mark_off(connection: Connection, phone: str, until: datetime, now: datetime) -> None:
    """The coach using `phone` is off call from `now` until `until` (a later OFF replaces it)."""
    await connection.execute(
        f"""INSERT INTO {SCHEMA}.coach_off (phone, off_until, changed_at) VALUES ($1, $2, $3)
            ON CONFLICT (phone) DO UPDATE SET off_until = $2, changed_at = $3""",
        phone,
        until,
        now,
    )


async def mark_on(connection: Connection, phone: str, now: datetime) -> bool:
    """The coach using `phone` is on call again; whether an OFF of theirs was still running."""
    until: datetime | None = await connection.fetchval(
        f"DELETE FROM {SCHEMA}.coach_off WHERE phone = $1 RETURNING off_until", phone
    )
    return until is not None and until > now


async def off_until(connection: Connection, phone: str, now: datetime) -> datetime | None:
    """When the OFF of the coach using `phone` ends; None when they are not off."""
    until: datetime | None = await connection.fetchval(
        f"SELECT off_until FROM {SCHEMA}.coach_off WHERE phone = $1 AND off_until > $2",
        phone,
        now,
    )
    return until


async def lock_availability(
    connection: Connection, phones: Sequence[str], coach_id: UUID | None = None
) -> None:
    """Hold, to the end of the transaction, the availability lock of each of `phones` and
    of the phones `coach_id`'s roster entry lists, in sorted order. An OFF takes its
    phone's; an offer being saved takes its coach's: whichever commits second sees the
    other (fresh34e: an offer saved as the OFF committed was paged after it, and kept)."""
    await connection.execute(
        f"""SELECT pg_advisory_xact_lock(hashtextextended('notify-availability:' || phone, 0))
            FROM (SELECT phone FROM unnest($1::text[]) AS phone
                  UNION SELECT phone FROM {SCHEMA}.coach_phones WHERE coach_id = $2
                  ORDER BY 1) AS phones""",
        list(phones),
        coach_id,
    )


async def coach_is_off(
    connection: Connection, coach_id: UUID, phones: Sequence[str], now: datetime
) -> bool:
    """Whether the coach texted OFF, in force at `now` (UTC), from one of `phones` (the
    offer's) or of the phones their roster entry lists."""
    found: bool = await connection.fetchval(
        f"""SELECT EXISTS (SELECT 1 FROM {SCHEMA}.coach_off
            WHERE off_until > $3 AND (phone = ANY($2::text[]) OR phone IN (
                SELECT phone FROM {SCHEMA}.coach_phones WHERE coach_id = $1)))""",
        coach_id,
        list(phones),
        now,
    )
    return found


async def off_since(
    connection: Connection, phones: Iterable[str], now: datetime
) -> dict[str, datetime]:
    """Of `phones`, those whose coach is off call at `now` (UTC), each with when the OFF was
    texted (UTC)."""
    rows = await connection.fetch(
        f"""SELECT phone, changed_at FROM {SCHEMA}.coach_off
            WHERE phone = ANY($1::text[]) AND off_until > $2""",
        list(phones),
        now,
    )
    return {row["phone"]: row["changed_at"] for row in rows}


async def phone_site(connection: Connection, phone: str) -> str | None:
    """The site of the latest offer paged to `phone` by SMS (None: nothing was)."""
    site: str | None = await connection.fetchval(
        f"""SELECT o.site_id FROM {SCHEMA}.reply_codes r
            JOIN {SCHEMA}.offers o USING (offer_id)
            WHERE r.destination = $1 ORDER BY r.assigned_at DESC LIMIT 1""",
        phone,
    )
    return site


async def phone_time_zone(connection: Connection, phone: str) -> str | None:
    """The site time zone of the latest offer paged to `phone` by SMS: the clock a coach's
    OFF answer names its end on. None when nothing with a zone was paged to it."""
    zone: str | None = await connection.fetchval(
        f"""SELECT o.site_time_zone FROM {SCHEMA}.reply_codes r
            JOIN {SCHEMA}.offers o USING (offer_id)
            WHERE r.destination = $1 AND o.site_time_zone IS NOT NULL
            ORDER BY r.assigned_at DESC LIMIT 1""",
        phone,
    )
    return zone
