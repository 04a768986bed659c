"""Managing a site's status webhook: its callback URL, its signing secret, and its
deliveries (list, replay). Used by the admin API and the CLI; each call is one
transaction on the caller's connection."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from handoff_platform.database import Connection
from handoff_referral.adapters import postgres as referral_store
from handoff_referral.adapters import webhook_store as store
from handoff_referral.adapters.webhook_store import DeliveryRow, Endpoint
from handoff_referral.domain.webhooks import check_callback_url, new_secret

ROTATION_GRACE = timedelta(hours=24)
"""How long the previous secret still signs after a rotation: a day to deploy the new one."""


class UnknownSite(Exception):
    """No site has this id."""


class NoCallback(Exception):
    """The site has no callback URL."""


class UnknownReferral(Exception):
    """No referral has this id."""


@dataclass(frozen=True)
class CallbackSet:
    """`secret` is the new signing secret, shown once; None when an existing callback only
    changed its URL (its secret stays)."""

    site_id: str
    url: str
    secret: str | None


async def set_callback(
    connection: Connection, site_id: str, url: str, https_only: bool
) -> CallbackSet:
    """Sets (or changes) the site's callback URL. Raises BadCallbackUrl, UnknownSite."""
    url = check_callback_url(url, https_only)
    async with connection.transaction():
        if await referral_store.get_site(connection, site_id) is None:
            raise UnknownSite(site_id)
        secret = new_secret()
        created = await store.set_endpoint(connection, site_id, url, secret)
    return CallbackSet(site_id, url, secret if created else None)


async def rotate_secret(
    connection: Connection, site_id: str, now: datetime | None = None
) -> tuple[str, datetime]:
    """A new signing secret (shown once) and until when (UTC) the previous one also signs.
    Raises NoCallback."""
    secret = new_secret()
    grace_until = (now or datetime.now(UTC)) + ROTATION_GRACE
    if not await store.rotate_secret(connection, site_id, secret, grace_until):
        raise NoCallback(site_id)
    return secret, grace_until


async def remove_callback(connection: Connection, site_id: str) -> None:
    """Stops the site's webhooks; undelivered steps are abandoned (replayable, counted by
    the serving processes). Raises NoCallback."""
    if not await store.remove_endpoint(connection, site_id, datetime.now(UTC)):
        raise NoCallback(site_id)


async def callbacks(connection: Connection, site_id: str | None = None) -> list[Endpoint]:
    return await store.endpoints(connection, site_id)


async def deliveries(
    connection: Connection,
    site_id: str | None = None,
    referral_id: UUID | None = None,
    failing: bool = False,
    limit: int = 100,
) -> list[DeliveryRow]:
    """Newest first; `failing`: failed, abandoned, still being retried, or waiting behind a
    step of their referral that is being retried."""
    return await store.list_deliveries(connection, site_id, referral_id, failing, limit)


async def replay(
    connection: Connection,
    site_id: str | None = None,
    referral_id: UUID | None = None,
    since: datetime | None = None,
    failed_only: bool = False,
) -> int:
    """Sends a site's (or a referral's) settled deliveries since `since` (UTC) again, in order,
    with their ids; returns how many. Raises ValueError when neither a site nor a referral
    is named (a replay of everything is never what is meant), UnknownSite or UnknownReferral
    for an id that names nothing (a typo must not read as "nothing to replay")."""
    if site_id is None and referral_id is None:
        raise ValueError("name a site or a referral to replay")
    if site_id is not None and await referral_store.get_site(connection, site_id) is None:
        raise UnknownSite(site_id)
    if referral_id is not None and not await store.referral_exists(connection, referral_id):
        raise UnknownReferral(str(referral_id))
    return await store.replay(
        connection, datetime.now(UTC), site_id, referral_id, since, failed_only
    )
