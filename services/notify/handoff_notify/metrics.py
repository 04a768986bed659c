"""The notify service's own metrics. Labels are channels and codes, never patient data."""

from prometheus_client import Counter, Gauge, Histogram

PAGES = Counter(
    "handoff_pages_total",
    "Messages by channel, kind (offer, withdrawn, assigned; unassigned: a supervisors' "
    "notice; reminder: a coach's follow-up reminder) and outcome: sent, delivered, "
    "failed, throttled, cancelled (reminders also retried, not_configured).",
    ["channel", "kind", "outcome"],
)
OFFER_TO_PAGE = Histogram(
    "handoff_offer_to_page_seconds",
    "From an offer being made to its page being handed to a provider, by channel.",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
SEND_SECONDS = Histogram(
    "handoff_page_send_seconds",
    "Time for a provider to take one message.",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROVIDER_ERRORS = Counter(
    "handoff_page_provider_errors_total",
    "Provider errors by channel and code (HTTP status and provider code, or SMTP code).",
    ["channel", "code"],
)
SEND_RETRIES = Counter(
    "handoff_page_send_retries_total", "Transient provider failures retried.", ["channel"]
)
RECONCILED = Counter(
    "handoff_page_sends_reconciled_total",
    "Sends whose outcome was lost, by what the provider said of them: found, not_found, "
    "unknowable, held_elsewhere (what it found is another message's: counted as not "
    "found), or reported (its status callback named it before a lookup was needed).",
    ["channel", "finding"],
)
DELIVERY_REPORTS = Counter(
    "handoff_page_delivery_reports_total",
    "Providers' final delivery reports by what became of them: applied; ignored (the "
    "message was already final); kept (it came before the message's provider id was "
    "stored); applied_late (a kept one, once the id was stored); expired (kept, and no "
    "message ever took it); spooled (taken while the database was away, applied after).",
    ["outcome"],
)
THROTTLED = Counter(
    "handoff_pages_throttled_total",
    "Messages held back, folded into a digest, or refused by a contact method's throttle.",
    ["channel", "kind", "action"],
)
CHANNEL_FALLBACKS = Counter(
    "handoff_page_channel_fallbacks_total",
    "Pages moved to the coach's next contact method, by why: failed or not_answered.",
    ["reason"],
)
ANSWERS = Counter(
    "handoff_coach_answers_total",
    "Coaches' answers by response and by how they answered.",
    ["response", "via"],
)
OFFER_TO_ANSWER = Histogram(
    "handoff_offer_to_answer_seconds",
    "From an offer reaching notify to the coach's accept or decline.",
    ["response"],
    buckets=(5, 10, 20, 30, 60, 120, 180, 300, 600),
)
BLOCKED_METHODS = Gauge(
    "handoff_contact_methods_blocked",
    "Coaches' contact methods no message may go to, by channel and state: opted_out (the "
    "coach texted STOP) or unreachable (the provider said never deliverable).",
    ["channel", "state"],
)
SMS_REPLIES = Counter(
    "handoff_sms_replies_total",
    "Coaches' SMS replies by what they were read as: answer, ambiguous (several open "
    "offers, no code), unclear (a yes and a no), several_codes (one answer naming several "
    "requests), unknown_code, closed (the offer was no longer open), not_understood, "
    "no_open_request (an answer from a coach's phone with nothing paged to it in a day), "
    "help, opt_out, opt_in, unavailable (OFF), available (ON), ignored (an opted-out or unknown "
    "sender).",
    ["reading"],
)
SPOOLED_REPLIES = Counter(
    "handoff_sms_replies_spooled_total",
    "Coaches' SMS replies taken while the database was away: spooled (kept on the "
    "replica's disk), applied (once the database answered; the coach texted the answer), "
    "answer_failed (applied, but the text answering it could not be sent).",
    ["outcome"],
)
