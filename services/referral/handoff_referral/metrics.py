"""The referral service's own metrics; the shared machinery's come from handoff_platform."""

from prometheus_client import Counter

REFERRALS_RECEIVED = Counter(
    "handoff_referrals_received_total",
    "New referrals accepted from hospitals (replays not counted).",
    ["site", "state", "urgency"],
)

REFERRAL_STEPS = Counter(
    "handoff_referral_steps_total",
    "Entries added to referral timelines after `received`: each status a referral entered "
    "(offered, waiting, unassigned, accepted, arrived, completed, cancelled, expired) and "
    "each offer that ended without a coach (coach_declined, coach_did_not_answer, "
    "coach_not_contacted, coach_unreachable, coach_at_capacity).",
    ["site", "step"],
)

FHIR_TOKENS = Counter(
    "handoff_fhir_token_requests_total",
    "SMART Backend Services token requests by outcome: `issued`, or why one was refused "
    "(unknown_client, unknown_kid, bad_signature, expired, far_future, wrong_audience, "
    "wrong_issuer, jti_reused, no_scope, malformed, …).",
    ["outcome"],
)
