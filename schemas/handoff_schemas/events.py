"""Every event in the catalog, grouped by the topic it travels on.

What an event may carry is decided by who needs it (DESIGN.md, minimum necessary):
identity of the patient never; substances only on ReferralCreated, for matching;
the briefing a coach sees on the offer page (location, callback number, language,
consent) only on OfferMade, for notify.
"""

from typing import ClassVar
from uuid import UUID, uuid5

from pydantic import Field

from handoff_schemas.envelope import (
    ContractModel,
    EventPayload,
    Payload,
    UtcDateTime,
    site_subject,
)
from handoff_schemas.topics import Topic
from handoff_schemas.vocabulary import (
    CancelReason,
    Channel,
    CoachResponse,
    Consent,
    E164Phone,
    FollowUpAssignee,
    FollowUpDays,
    FollowUpResult,
    GenderPreference,
    LanguageTag,
    PageFailure,
    RecoveryOutcome,
    ResponseVia,
    ShortLabel,
    SiteId,
    Substance,
    Tier,
    TimeZoneName,
    UnassignedReason,
    Urgency,
    UsState,
    WaitingReason,
    WithdrawReason,
)

# handoff.referrals — produced by the referral service


class SiteFacts(ContractModel):
    """What other services need to know of the referring site; the referral service owns it."""

    site_id: SiteId
    short_name: ShortLabel
    state: UsState
    time_zone: TimeZoneName


# handoff.sites — produced by the referral service, which owns sites


class SiteRegistered(Payload):
    """A site was registered or its facts changed: what other services may rely on.

    Carried as state, latest wins: matching keeps a read-only projection, so it can
    resolve on-call shifts and report coverage gaps before a site's first referral.
    """

    event_type: ClassVar[str] = "org.handoff.sites.site_registered"
    topic: ClassVar[Topic] = Topic.SITES

    site: SiteFacts
    registered_at: UtcDateTime

    @property
    def subject_id(self) -> UUID:
        return site_subject(self.site.site_id)


class ReferralCreated(EventPayload):
    event_type: ClassVar[str] = "org.handoff.referral.created"
    topic: ClassVar[Topic] = Topic.REFERRALS

    site: SiteFacts
    urgency: Urgency
    location: ShortLabel = Field(description="ED unit or bed; never the patient's name.")
    callback_phone: E164Phone
    preferred_language: LanguageTag
    interpreter_needed: bool
    coach_gender_preference: GenderPreference | None = None
    substances: frozenset[Substance] = Field(
        description="42 CFR Part 2: for matching's lived-experience term only; never logged."
    )
    consent: Consent
    received_at: UtcDateTime


class ReferralUpdated(EventPayload):
    """Fields the ED changed; absent fields are unchanged."""

    event_type: ClassVar[str] = "org.handoff.referral.updated"
    topic: ClassVar[Topic] = Topic.REFERRALS

    urgency: Urgency | None = None
    location: ShortLabel | None = None
    callback_phone: E164Phone | None = None
    consent: Consent | None = None
    updated_at: UtcDateTime


class ReferralCancelled(EventPayload):
    event_type: ClassVar[str] = "org.handoff.referral.cancelled"
    topic: ClassVar[Topic] = Topic.REFERRALS

    reason: CancelReason
    cancelled_at: UtcDateTime


class VisitRecorded(EventPayload):
    """The coach who saw the patient recorded the bedside visit on their page (issue #16):
    the patient's follow-up choice and what the visit gave them. The callback number and
    times a consenting patient gave stay in the referral service, encrypted; never here."""

    event_type: ClassVar[str] = "org.handoff.referral.visit_recorded"
    topic: ClassVar[Topic] = Topic.REFERRALS

    site_id: SiteId
    coach_id: UUID
    follow_up_consent: bool
    outcomes: frozenset[RecoveryOutcome] = Field(
        description="42 CFR Part 2 (treatment, MOUD): for the reports read model only."
    )
    recorded_at: UtcDateTime


class FollowUpDue(EventPayload):
    """A follow-up attempt is due now: matching picks who makes it (FollowUpAssigned).
    `attempt` counts from 1 within the task's window; a `no_answer` makes the next one.
    `coach_id` is the coach who saw the patient."""

    event_type: ClassVar[str] = "org.handoff.referral.follow_up_due"
    topic: ClassVar[Topic] = Topic.REFERRALS

    task_id: UUID
    site_id: SiteId
    window_days: FollowUpDays
    attempt: int = Field(ge=1, le=10)
    coach_id: UUID
    due_at: UtcDateTime
    window_ends_at: UtcDateTime


class FollowUpAttempted(EventPayload):
    """A coach recorded one follow-up attempt and, when the patient was reached, the
    outcomes (none recorded otherwise)."""

    event_type: ClassVar[str] = "org.handoff.referral.follow_up_attempted"
    topic: ClassVar[Topic] = Topic.REFERRALS

    task_id: UUID
    site_id: SiteId
    window_days: FollowUpDays
    attempt: int = Field(ge=1, le=10)
    coach_id: UUID
    result: FollowUpResult
    outcomes: frozenset[RecoveryOutcome] = Field(
        default=frozenset(),
        description="42 CFR Part 2 (treatment, MOUD): for the reports read model only.",
    )
    attempted_at: UtcDateTime


class FollowUpConsentRevoked(EventPayload):
    """The patient withdrew their follow-up consent: every open task was cancelled and the
    stored contact details erased, in the same transaction as this event."""

    event_type: ClassVar[str] = "org.handoff.referral.follow_up_consent_revoked"
    topic: ClassVar[Topic] = Topic.REFERRALS

    site_id: SiteId
    tasks_cancelled: int = Field(ge=0)
    revoked_at: UtcDateTime


# handoff.dispatch — produced by the matching service


class OfferBriefing(ContractModel):
    """The minimum a coach needs to act, shown behind the signed link, never in an SMS body."""

    location: ShortLabel
    callback_phone: E164Phone
    preferred_language: LanguageTag
    interpreter_needed: bool
    consent: Consent


class ContactPoint(ContractModel):
    """One of a coach's contact methods: staff data, not patient data."""

    channel: Channel
    destination: str = Field(
        max_length=320,
        pattern=r"^(\+[1-9][0-9]{7,14}|[^\s@]+@[^\s@]+|https://\S+)$",
        description="E.164 phone, email address or https URL, per channel.",
    )


class OfferMade(EventPayload):
    event_type: ClassVar[str] = "org.handoff.dispatch.offer_made"
    topic: ClassVar[Topic] = Topic.DISPATCH

    offer_id: UUID
    coach_id: UUID
    site_id: SiteId
    site_short_name: ShortLabel
    urgency: Urgency
    tier: Tier
    site_time_zone: TimeZoneName | None = Field(
        default=None,
        description="The site's IANA zone, so that texts give its wall-clock time.",
    )
    expires_at: UtcDateTime = Field(
        description="The latest the offer can stay open: the page deadline plus the site's "
        "ack timeout. The ack clock itself starts when the first page reaches a provider."
    )
    page_deadline: UtcDateTime | None = Field(
        default=None,
        description="If no page of this offer has reached a provider by then, the offer "
        "ends as not_contacted; notify must not send its first page after it.",
    )
    briefing: OfferBriefing
    contacts: tuple[ContactPoint, ...] = Field(
        default=(),
        max_length=8,
        description="The coach's contact methods in order of preference, as the roster "
        "stood when the offer was made; notify pages them in this order.",
    )
    batch_id: UUID | None = Field(
        default=None,
        description="Offers made together (a broadcast asks several coaches at once) share "
        "it; the referral's timeline shows one `offered` step per batch. None: an offer on "
        "its own.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="How many offers the batch holds: the coaches asked at once.",
    )


class OfferWithdrawn(EventPayload):
    event_type: ClassVar[str] = "org.handoff.dispatch.offer_withdrawn"
    topic: ClassVar[Topic] = Topic.DISPATCH

    offer_id: UUID
    coach_id: UUID
    reason: WithdrawReason
    withdrawn_at: UtcDateTime


class CoachAssigned(EventPayload):
    event_type: ClassVar[str] = "org.handoff.dispatch.coach_assigned"
    topic: ClassVar[Topic] = Topic.DISPATCH

    offer_id: UUID
    coach_id: UUID
    assigned_at: UtcDateTime
    arrival_deadline: UtcDateTime


class ReferralEscalated(EventPayload):
    event_type: ClassVar[str] = "org.handoff.dispatch.referral_escalated"
    topic: ClassVar[Topic] = Topic.DISPATCH

    from_tier: Tier
    to_tier: Tier
    escalated_at: UtcDateTime


class ReferralUnassigned(EventPayload):
    """Nobody took the referral. Not final: matching offers it again when a coach of the
    site or its state pool has capacity or comes on call, until the ED cancels it or the
    site's give-up time passes (ReferralExpired)."""

    event_type: ClassVar[str] = "org.handoff.dispatch.referral_unassigned"
    topic: ClassVar[Topic] = Topic.DISPATCH

    reason: UnassignedReason
    unassigned_at: UtcDateTime
    site_id: SiteId | None = None
    site_short_name: ShortLabel | None = None
    site_time_zone: TimeZoneName | None = Field(
        default=None,
        description="The site's IANA zone, so that the supervisors' notice gives its "
        "wall-clock time.",
    )
    urgency: Urgency | None = Field(
        default=None, description="The referral's urgency, to tell notices apart."
    )
    supervisor_contacts: tuple[ContactPoint, ...] = Field(
        default=(),
        max_length=16,
        description="Where notify tells the site's supervisors that the referral is "
        "unassigned (staff contact data, never the patient's).",
    )
    nobody_reached: bool = Field(
        default=False,
        description="True when every offer of the last round ended without its page "
        "reaching the coach (not contacted in time, or every contact method failed): a "
        "paging problem, not coaches who said no or did not answer.",
    )


class ReferralWaiting(EventPayload):
    """Every eligible coach on call is at capacity: the referral waits in line (urgency,
    then arrival) and is offered the moment one frees up."""

    event_type: ClassVar[str] = "org.handoff.dispatch.referral_waiting"
    topic: ClassVar[Topic] = Topic.DISPATCH

    reason: WaitingReason
    waiting_since: UtcDateTime


class ReferralExpired(EventPayload):
    """The site's give-up time passed with no coach assigned: dispatch ends for good."""

    event_type: ClassVar[str] = "org.handoff.dispatch.referral_expired"
    topic: ClassVar[Topic] = Topic.DISPATCH

    expired_at: UtcDateTime


class FollowUpAssigned(EventPayload):
    """Matching gave one follow-up attempt to a coach; notify reminds them with a link to
    the referral service's follow-up page, which shows the patient's number to this coach
    only. A later FollowUpAssigned for the same task and attempt (the coach went off the
    roster) replaces this one. `contacts` are the coach's own, as on OfferMade."""

    event_type: ClassVar[str] = "org.handoff.dispatch.follow_up_assigned"
    topic: ClassVar[Topic] = Topic.DISPATCH

    assignment_id: UUID
    task_id: UUID
    attempt: int = Field(ge=1, le=10)
    coach_id: UUID
    assignee: FollowUpAssignee
    site_id: SiteId
    site_short_name: ShortLabel
    site_time_zone: TimeZoneName
    window_days: FollowUpDays
    due_at: UtcDateTime
    window_ends_at: UtcDateTime
    contacts: tuple[ContactPoint, ...] = Field(max_length=16)
    assigned_at: UtcDateTime


# handoff.pages — produced by the notify service


class PageSent(EventPayload):
    event_type: ClassVar[str] = "org.handoff.pages.page_sent"
    topic: ClassVar[Topic] = Topic.PAGES

    page_id: UUID
    offer_id: UUID
    coach_id: UUID
    channel: Channel
    sent_at: UtcDateTime


class PageDelivered(EventPayload):
    event_type: ClassVar[str] = "org.handoff.pages.page_delivered"
    topic: ClassVar[Topic] = Topic.PAGES

    page_id: UUID
    offer_id: UUID
    coach_id: UUID
    channel: Channel
    delivered_at: UtcDateTime


class PageFailed(EventPayload):
    event_type: ClassVar[str] = "org.handoff.pages.page_failed"
    topic: ClassVar[Topic] = Topic.PAGES

    page_id: UUID
    offer_id: UUID
    coach_id: UUID
    channel: Channel
    failure: PageFailure
    all_channels_failed: bool = Field(
        description=(
            "True when no contact method is left: matching moves to the next coach, the offer"
            " ending unreachable, or not_contacted when the failure is `throttled` (notify's"
            " own flood ceiling). Never true for `provider_error`: those pages are retried"
            " until the page deadline."
        )
    )
    failed_at: UtcDateTime


class CoachResponded(EventPayload):
    event_type: ClassVar[str] = "org.handoff.pages.coach_responded"
    topic: ClassVar[Topic] = Topic.PAGES

    offer_id: UUID
    coach_id: UUID
    response: CoachResponse
    via: ResponseVia
    responded_at: UtcDateTime


COACH_PHONE_SUBJECTS = UUID("0b7a4f0e-2d4c-4f65-8f3e-5a1d9c6b2e47")


class CoachAvailabilityChanged(Payload):
    """A coach texted OFF (unavailable from `changed_at` until ON, or `until`) or ON
    (available again), from `phone`. Notify does not know whose number it is; matching
    does (its roster), and makes it an override in every pool the coach is on call in.
    Keyed by a UUID derived from the phone, so one coach's OFF and ON stay in order."""

    event_type: ClassVar[str] = "org.handoff.pages.coach_availability_changed"
    topic: ClassVar[Topic] = Topic.PAGES

    phone: E164Phone
    available: bool
    changed_at: UtcDateTime
    until: UtcDateTime | None = None

    @property
    def subject_id(self) -> UUID:
        return uuid5(COACH_PHONE_SUBJECTS, self.phone)


class CoachPhonesChanged(Payload):
    """The phones (SMS and voice destinations, E.164) the roster lists for a coach, as they
    now stand; `active` false (or no phones): the coach's numbers are no coach's any more.
    Matching publishes one per coach on each roster import, and every coach's at start.
    Notify keeps them, so a text from a number on no coach's roster is told it is not
    registered instead of being answered as a coach. Staff contact data, as on
    OfferMade.contacts. Keyed by the coach id."""

    event_type: ClassVar[str] = "org.handoff.dispatch.coach_phones_changed"
    topic: ClassVar[Topic] = Topic.DISPATCH

    coach_id: UUID
    phones: tuple[E164Phone, ...] = Field(default=(), max_length=16)
    active: bool
    changed_at: UtcDateTime

    @property
    def subject_id(self) -> UUID:
        return self.coach_id


CONTACT_METHOD_SUBJECTS = UUID("6f1c2a7e-94d3-4b0e-8c55-2e7d0a9b3f61")


class ContactMethodReachabilityChanged(Payload):
    """A contact method notify sends to went out of good standing (`reachable` false: the
    coach texted STOP, or the provider said it can never be delivered to) or back into it
    (START, or a coordinator cleared it). Notify knows methods, not whose they are; matching
    (the roster) knows each coach's methods, and asks nobody all of whose methods are
    blocked (decision 0019). Keyed by a UUID derived from the method, so its changes stay
    in order. `destination` is staff contact data, as on OfferMade.contacts."""

    event_type: ClassVar[str] = "org.handoff.pages.contact_method_reachability_changed"
    topic: ClassVar[Topic] = Topic.PAGES

    channel: Channel
    destination: str = Field(
        max_length=320,
        pattern=r"^(\+[1-9][0-9]{7,14}|[^\s@]+@[^\s@]+|https://\S+)$",
        description="As on ContactPoint: a phone (E.164), an email address or a URL.",
    )
    reachable: bool
    reason: str = Field(
        max_length=64,
        pattern=r"^[a-z_]+(:[A-Za-z0-9_.-]+)*$",
        description=(
            "stop_keyword, start_keyword, provider:<status>:<code>, admin, or throttled /"
            " throttle_freed (the method's offer pages over notify's flood ceiling, and a"
            " slot free again)."
        ),
    )
    changed_at: UtcDateTime

    @property
    def subject_id(self) -> UUID:
        return uuid5(CONTACT_METHOD_SUBJECTS, f"{self.channel.value}:{self.destination}")
