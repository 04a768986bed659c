"""The referral service's own metrics; the shared machinery's come from handoff_platform."""

from prometheus_client import Counter, Gauge, Histogram

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
    "coach_not_contacted, coach_unreachable, coach_at_capacity), and a discharge after the "
    "coach arrived (discharged, from HL7).",
    ["site", "step"],
)

HL7_MESSAGES = Counter(
    "handoff_hl7_messages_total",
    "HL7 v2 messages answered, by site (`unregistered` for unknown senders), message type "
    "(MSH-9, `other` for types Handoff does not handle) and outcome: created, replayed, "
    "cancelled, discharged, location_updated, ignored (AA, nothing to do), unknown_order "
    "and unknown_visit (AA with a warning: a cancel, A03, A08 or A11 about an order or visit "
    "no referral was made for), error (AE), rejected (AR: unknown sender, database away, "
    "internal error).",
    ["site", "message_type", "outcome"],
)
HL7_ACK_SECONDS = Histogram(
    "handoff_hl7_ack_seconds",
    "Time from a whole HL7 message read off the socket to its ACK ready, seconds, by ACK code.",
    ["ack"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
MLLP_CONNECTIONS = Gauge("handoff_mllp_connections", "Open MLLP connections.")
MLLP_TIMEOUTS = Counter(
    "handoff_mllp_connections_timed_out_total",
    "MLLP connections Handoff closed for silence, by phase: idle (no message begun within "
    "MLLP_IDLE_SECONDS), partial_frame (a frame begun and not ended within "
    "MLLP_FRAME_SECONDS).",
    ["phase"],
)
MLLP_FRAMING_ERRORS = Counter(
    "handoff_mllp_framing_errors_total",
    "MLLP frames that could not be read, by reason: no_start_block (bytes outside MLLP "
    "framing, e.g. an engine without MLLP wrapping), too_large (over 1 MiB: connection "
    "closed), several_messages (more than one message in a frame: refused with AE).",
    ["reason"],
)
FHIR_TOKENS = Counter(
    "handoff_fhir_token_requests_total",
    "SMART Backend Services token requests by outcome: `issued`, or why one was refused "
    "(unknown_client, unknown_kid, bad_signature, expired, far_future, wrong_audience, "
    "wrong_issuer, jti_reused, no_scope, malformed, …).",
    ["outcome"],
)
WEBHOOK_OUTCOMES = ("delivered", "retry", "failed", "abandoned")
WEBHOOK_DELIVERIES = Counter(
    "handoff_webhook_deliveries_total",
    "Status webhook attempts by site and outcome: `delivered` (the site answered 2xx), "
    "`retry` (it did not: an HTTP status other than 2xx, a timeout or a connection error; "
    "tried again with backoff), `failed` (the step's retry window passed: given up, "
    "replayable); and deliveries `abandoned` unsent because the site's callback was removed "
    "(replayable). Every outcome is exported at 0 for each site with a callback.",
    ["site", "outcome"],
)
WEBHOOK_PENDING = Gauge(
    "handoff_webhook_pending",
    "Status webhook deliveries not yet acknowledged, by site (sites with a callback).",
    ["site"],
)
WEBHOOK_OLDEST_PENDING_SECONDS = Gauge(
    "handoff_webhook_oldest_pending_seconds",
    "Age of the site's oldest unacknowledged status webhook, seconds since it became due "
    "(0 when none is pending).",
    ["site"],
)
WEBHOOK_SECONDS = Histogram(
    "handoff_webhook_attempt_seconds",
    "Time for one webhook POST to be answered (or to fail), seconds.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

LOCATIONS_CUT = Counter(
    "handoff_referral_locations_cut_total",
    "Locations over 40 characters cut to 40 rather than refusing the consult, by intake "
    "(hl7, fhir).",
    ["intake"],
)

FOLLOW_UPS = Counter(
    "handoff_referral_follow_ups_total",
    "Follow-up steps (issue #16), by site and step: visit_recorded_consented, "
    "visit_recorded_declined (the patient said no to follow-up calls), due (an attempt fell "
    "due), attempted_<result> (reached, no_answer, wrong_number, declined_further_contact, "
    "deceased, readmitted), consent_revoked. Counted once each transaction commits.",
    ["site", "step"],
)
CONTACTS_UNREADABLE = Counter(
    "handoff_referral_follow_up_contacts_unreadable_total",
    "Follow-up contacts that none of the running FOLLOW_UP_KEYS opens, counted each time a "
    "page needs one (a key dropped too early, or rotate-keys run before every replica was "
    "restarted with the new key). Any increase is a page: coaches cannot make their calls.",
)
