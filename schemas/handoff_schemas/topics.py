"""Topic names, the partition key and dead-letter naming: the one place they are defined."""

from enum import StrEnum
from uuid import UUID


class Topic(StrEnum):
    REFERRALS = "handoff.referrals"
    DISPATCH = "handoff.dispatch"
    PAGES = "handoff.pages"
    SITES = "handoff.sites"  # keyed by site_subject(site_id): one site's facts stay in order


DEAD_LETTER_SUFFIX = ".dlq"


def dead_letter_topic(consumer_group: str) -> str:
    """One dead-letter topic per consumer group, so a replay goes back to the group that failed."""
    return f"{consumer_group}{DEAD_LETTER_SUFFIX}"


def partition_key(subject: UUID) -> bytes:
    """Topics are keyed by the event's subject — the referral id (the site's on
    handoff.sites) — so one referral's events stay in order."""
    return str(subject).encode()
