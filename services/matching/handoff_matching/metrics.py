"""The matching service's own metrics. Labels are codes and site ids, never patient data."""

from prometheus_client import Counter, Gauge, Histogram

OFFERS = Counter(
    "handoff_offers_total",
    "Offers by outcome: made, accepted, declined, and withdrawals by reason (expired, filled, "
    "cancelled, at_capacity, not_contacted, unreachable).",
    ["site", "outcome"],
)
ESCALATIONS = Counter(
    "handoff_escalations_total", "Referrals escalated, by the tier reached.", ["site", "tier"]
)
UNASSIGNED = Counter(
    "handoff_referrals_unassigned_total",
    "Referrals nobody accepted after the whole ladder.",
    ["site", "reason"],
)
TIME_TO_ACCEPTANCE = Histogram(
    "handoff_time_to_acceptance_seconds",
    "From the referral reaching matching to a coach's acceptance.",
    ["site"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600),
)
COVERAGE_GAP_MINUTES = Gauge(
    "handoff_coverage_gap_minutes_next_24h",
    "Minutes in the next 24 h with no eligible coach on call for the site or its state pool.",
    ["site"],
)
UNCOVERED_NOW = Gauge(
    "handoff_coverage_uncovered_now", "1 while no eligible coach is on call for the site.", ["site"]
)
AWAITING_ACCEPTANCE = Gauge(
    "handoff_referrals_awaiting_acceptance",
    "Referrals being offered that no coach has accepted yet.",
    ["site"],
)
OLDEST_AWAITING_SECONDS = Gauge(
    "handoff_referral_oldest_awaiting_acceptance_seconds",
    "How long the oldest referral still being offered has waited for a coach (0: none).",
    ["site"],
)
NEXT_GAP_SECONDS = Gauge(
    "handoff_coverage_next_gap_seconds",
    "Seconds until the next coverage gap within 24 h begins (0: uncovered now; absent: none).",
    ["site"],
)
ARRIVALS_OVERDUE = Counter(
    "handoff_arrivals_overdue_total",
    "Assigned coaches who had not reported arriving by the site's arrival deadline.",
    ["site"],
)
IN_LINE = Gauge(
    "handoff_referrals_in_line",
    "Referrals in line for a coach: waiting (every coach on call is full) or unassigned.",
    ["site", "state"],
)
WAITED = Counter(
    "handoff_referrals_waited_total",
    "Referrals that entered the waiting line because every coach on call was at capacity.",
    ["site"],
)
EXPIRED = Counter(
    "handoff_referrals_expired_total",
    "Referrals closed unassigned when the site's give-up time passed.",
    ["site"],
)
ACCEPTANCES_REFUSED_AT_CAPACITY = Counter(
    "handoff_acceptances_refused_at_capacity_total",
    "Acceptances refused because the coach already held max_concurrent assignments.",
    ["site"],
)
NOT_CONTACTED = Counter(
    "handoff_offers_not_contacted_total",
    "Offers whose page reached no provider by the site's page deadline.",
    ["site"],
)
COACH_SLOTS_HELD = Gauge(
    "handoff_coach_slots_held",
    "Open offers plus assignments held by active coaches, summed over every coach.",
)
COACH_SLOTS = Gauge(
    "handoff_coach_slots", "The sum of active coaches' max_concurrent: the slots there are."
)
COACHES_AT_CAPACITY = Gauge(
    "handoff_coaches_at_capacity", "Active coaches whose load has reached max_concurrent."
)
ON_CALL_RECOMPUTED = Counter(
    "handoff_on_call_recomputed_total",
    "Pools whose on-call timeline was recomputed (a schedule changed, or the horizon passed).",
)
SCHEDULE_CHANGES = Counter(
    "handoff_schedule_changes_total",
    "Schedule changes by kind: rotation, layer, calendar_import, temporary, coach_off, coach_on.",
    ["kind"],
)
REACHABILITY_CHANGES = Counter(
    "handoff_matching_contact_method_changes_total",
    "Contact methods notify reported out of good standing (blocked: STOP, never deliverable) "
    "or back in it (reachable: START, cleared by a coordinator).",
    ["change"],
)
FOLLOW_UPS = Counter(
    "handoff_follow_ups_total",
    "Follow-up attempts by what matching did: assigned (to the visiting_coach, the site_pool "
    "or a supervisor), nobody (no one could be given it now: tried again in 15 min), "
    "lapsed (its window ended before anyone could be given it), reassigned (its coach left "
    "the roster before it was recorded: given again).",
    ["site", "outcome"],
)
