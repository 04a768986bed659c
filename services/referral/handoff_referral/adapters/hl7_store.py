"""PostgreSQL storage of HL7 v2 interfaces, acknowledged messages and the visits of orders.
Every function runs on the caller's connection, so the use case decides the transaction."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from handoff_platform.database import Connection
from handoff_referral import SCHEMA
from handoff_referral.domain.hl7 import Interface
from handoff_referral.domain.referral import Site
from handoff_referral.domain.status import FINAL, Step


class SenderOfAnotherSite(Exception):
    """The sender (MSH-3, MSH-4) is already registered for another site, and the caller did
    not ask to move it: `site_id` is the site it belongs to."""

    def __init__(self, application: str, facility: str, site_id: str) -> None:
        super().__init__(f"interface {application}/{facility} belongs to site {site_id}")
        self.site_id = site_id


@dataclass(frozen=True)
class SavedInterface:
    """What save_interface did: `created` if the sender was new; `previous_site` the site it
    was registered for before (None if new), another one than now only when moved."""

    created: bool
    previous_site: str | None


async def save_interface(
    connection: Connection, interface: Interface, *, move: bool = False
) -> SavedInterface:
    """Registers the interface, or replaces the mapping of one already registered for the
    same sender.

    The sender is how a message is tied to a hospital, so a registration that names another
    site than the one the sender has is refused with SenderOfAnotherSite unless `move`:
    a copied file with a slipped site_id would otherwise route one hospital's orders, cancels
    and callback phone to another's coaches.
    """
    async with connection.transaction():
        # FOR UPDATE: two registrations of the same sender at once see each other's site.
        current: str | None = await connection.fetchval(
            f"""SELECT site_id FROM {SCHEMA}.hl7_interfaces
                WHERE sending_application = $1 AND sending_facility = $2 FOR UPDATE""",
            interface.sending_application,
            interface.sending_facility,
        )
        if current is not None and current != interface.site_id and not move:
            raise SenderOfAnotherSite(
                interface.sending_application, interface.sending_facility, current
            )
        created = await connection.fetchval(
            f"""INSERT INTO {SCHEMA}.hl7_interfaces
                    (sending_application, sending_facility, site_id, mapping)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (sending_application, sending_facility) DO UPDATE
                    SET site_id = excluded.site_id, mapping = excluded.mapping,
                        updated_at = now()
                RETURNING xmax = 0""",
            interface.sending_application,
            interface.sending_facility,
            interface.site_id,
            interface.model_dump_json(),
        )
    return SavedInterface(bool(created), current)


async def list_interfaces(connection: Connection, site_id: str | None) -> list[Interface]:
    rows = await connection.fetch(
        f"""SELECT mapping FROM {SCHEMA}.hl7_interfaces
            WHERE $1::text IS NULL OR site_id = $1
            ORDER BY site_id, sending_application, sending_facility""",
        site_id,
    )
    return [Interface.model_validate_json(row["mapping"]) for row in rows]


async def remove_interface(connection: Connection, application: str, facility: str) -> bool:
    removed = await connection.fetchval(
        f"""DELETE FROM {SCHEMA}.hl7_interfaces
            WHERE sending_application = $1 AND sending_facility = $2 RETURNING true""",
        application,
        facility,
    )
    return bool(removed)


@dataclass(frozen=True)
class Sender:
    """A registered sender, its site, and the SHA-256 of the message it already had
    acknowledged AA under the control id asked about (None if none was)."""

    interface: Interface
    site: Site
    acknowledged_sha256: bytes | None


async def find_sender(
    connection: Connection, application: str, facility: str, control_id: str
) -> Sender | None:
    """The interface registered for MSH-3 `application` and MSH-4 `facility`, its site, and
    what was acknowledged under MSH-10 `control_id`: one round trip per message."""
    row = await connection.fetchrow(
        f"""SELECT i.mapping, s.site_id, s.name, s.short_name, s.state, s.time_zone,
                m.message_sha256
            FROM {SCHEMA}.hl7_interfaces i JOIN {SCHEMA}.sites s USING (site_id)
            LEFT JOIN {SCHEMA}.hl7_messages m
                ON m.sending_application = i.sending_application
                AND m.sending_facility = i.sending_facility AND m.control_id = $3
            WHERE i.sending_application = $1 AND i.sending_facility = $2""",
        application,
        facility,
        control_id,
    )
    if row is None:
        return None
    values = dict(row)
    interface = Interface.model_validate_json(values.pop("mapping"))
    digest: bytes | None = values.pop("message_sha256")
    return Sender(interface, Site(**values), digest)


async def record_message(
    connection: Connection,
    application: str,
    facility: str,
    control_id: str,
    digest: bytes,
    message_type: str,
    referral_id: UUID | None,
    at: datetime,
    visit: tuple[str, bytes] | None = None,
    sent_at: datetime | None = None,
) -> None:
    """Records a message acknowledged AA and, for an order with a visit (`site_id`,
    `visit_key`), links the referral to the visit, and its location to the order's MSH-7
    (`sent_at`, UTC), so that an A08 sent before the order moves nothing: one statement,
    so one commit."""
    await connection.execute(
        f"""WITH link AS (
                INSERT INTO {SCHEMA}.hl7_orders (referral_id, site_id, visit_key)
                SELECT $6, $8, $9 WHERE $9::bytea IS NOT NULL
                ON CONFLICT DO NOTHING),
            located AS (
                UPDATE {SCHEMA}.referrals SET location_sent_at = $10
                WHERE referral_id = $6 AND $9::bytea IS NOT NULL AND location_sent_at IS NULL)
            INSERT INTO {SCHEMA}.hl7_messages (sending_application, sending_facility,
                control_id, message_sha256, message_type, referral_id, received_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
        application,
        facility,
        control_id,
        digest,
        message_type,
        referral_id,
        at,
        visit[0] if visit else None,
        visit[1] if visit else None,
        sent_at,
    )


async def open_referrals_of_visit(
    connection: Connection, site_id: str, visit_key: bytes
) -> list[UUID]:
    """The visit's referrals not yet completed, cancelled or expired, oldest first."""
    rows = await connection.fetch(
        f"""SELECT o.referral_id FROM {SCHEMA}.hl7_orders o
                JOIN {SCHEMA}.referrals r USING (referral_id)
            WHERE o.site_id = $1 AND o.visit_key = $2 AND r.status <> ALL($3::text[])
            ORDER BY r.received_at""",
        site_id,
        visit_key,
        [status.value for status in FINAL],
    )
    return [row["referral_id"] for row in rows]


async def visit_known(connection: Connection, site_id: str, visit_key: bytes) -> bool:
    """Whether any referral, open or not, was ordered over HL7 for this visit of the site."""
    found = await connection.fetchval(
        f"SELECT true FROM {SCHEMA}.hl7_orders WHERE site_id = $1 AND visit_key = $2 LIMIT 1",
        site_id,
        visit_key,
    )
    return bool(found)


async def set_location(
    connection: Connection, referral_id: UUID, location: str, now: datetime, sent_at: datetime
) -> str:
    """Moves the referral to `location` as an A08 sent at `sent_at` (MSH-7, UTC) says:
    "moved", "unchanged" (it was there already) or "older" (an A08 sent after this one
    moved it already; nothing changes)."""
    row = await connection.fetchrow(
        f"""SELECT location, location_sent_at FROM {SCHEMA}.referrals WHERE referral_id = $1""",
        referral_id,
    )
    if row is None:
        return "unchanged"
    if row["location_sent_at"] is not None and sent_at < row["location_sent_at"]:
        return "older"
    await connection.execute(
        f"""UPDATE {SCHEMA}.referrals SET location = $2, location_sent_at = $3,
                updated_at = CASE WHEN location <> $2 THEN $4 ELSE updated_at END
            WHERE referral_id = $1""",
        referral_id,
        location,
        sent_at,
        now,
    )
    return "moved" if row["location"] != location else "unchanged"


async def has_step(connection: Connection, referral_id: UUID, step: Step) -> bool:
    """Whether the referral's timeline already holds an entry for `step`."""
    found: bool = await connection.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.timeline WHERE referral_id = $1 AND status = $2)",
        referral_id,
        step.value,
    )
    return found
