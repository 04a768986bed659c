"""The referral service's own metrics; the shared machinery's come from handoff_platform."""

from prometheus_client import Counter

REFERRALS_RECEIVED = Counter(
    "handoff_referrals_received_total",
    "New referrals accepted from hospitals (replays not counted).",
    ["site", "state", "urgency"],
)
