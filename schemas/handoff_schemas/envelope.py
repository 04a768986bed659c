"""The CloudEvents 1.0 envelope that wraps every Handoff event.

On the wire an event is CloudEvents' JSON format: context attributes at the top,
the typed payload under `data`. Handoff's extension attributes follow the
CloudEvents naming rule (lower-case letters and digits only): `schemaversion`,
`correlationid`, `causationid`.
"""

import functools
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar, cast
from uuid import UUID, uuid4, uuid5

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from handoff_schemas.privacy import check_event_model
from handoff_schemas.topics import Topic

EVENT_TYPE_PREFIX = "org.handoff."


class ContractModel(BaseModel):
    """Base of every model that travels in an event: refuses PHI-shaped fields when defined.

    Unknown fields are ignored, not rejected, so a consumer keeps working when a
    producer adds an optional field (forward compatibility); nothing unknown is kept.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        check_event_model(cls.__name__, cls.model_fields)


class Payload(ContractModel):
    """The typed `data` of one kind of event. Each subclass names its type, topic and version,
    and the id it is about: the envelope's subject, and the key that keeps its story in order."""

    event_type: ClassVar[str]
    topic: ClassVar[Topic]
    schema_version: ClassVar[int] = 1

    @property
    def subject_id(self) -> UUID:
        raise NotImplementedError


class EventPayload(Payload):
    """An event in one referral's story: on the referrals, dispatch and pages topics."""

    referral_id: UUID

    @property
    def subject_id(self) -> UUID:
        return self.referral_id


SITE_SUBJECTS = UUID("6f1c2b1e-5d0a-4c52-9d7a-2f1f3f0c7e11")


def site_subject(site_id: str) -> UUID:
    """The subject (and partition key) of a site's events: a UUID derived from its slug."""
    return uuid5(SITE_SUBJECTS, site_id)


P = TypeVar("P", bound=Payload)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+00:01 is in year 0 in UTC: not a datetime
        raise ValueError("out of range once converted to UTC") from None


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A point in time with its offset, normalised to UTC: the only time type on the wire."""


class Envelope(BaseModel, Generic[P]):
    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: UUID = Field(default_factory=uuid4)
    type: str = Field(pattern=r"^org\.handoff\.[a-z_]+\.[a-z_]+$")
    source: str = Field(pattern=r"^/handoff/[a-z_-]+$", description="The producing service.")
    time: UtcDateTime = Field(default_factory=utc_now)
    subject: UUID = Field(
        description="The referral this event is about; for a site's events, its site_subject."
    )
    datacontenttype: Literal["application/json"] = "application/json"
    schemaversion: int = Field(ge=1)
    correlationid: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Shared by every event and log line of one referral's story.",
    )
    causationid: UUID | None = Field(
        default=None, description="The id of the event that caused this one, if any."
    )
    data: P

    @model_validator(mode="after")
    def _matches_payload(self) -> Self:
        if self.type != self.data.event_type:
            raise ValueError(f"type {self.type!r} does not match payload {self.data.event_type!r}")
        if self.subject != self.data.subject_id:
            raise ValueError("subject must be the payload's referral (or site) id")
        return self

    @classmethod
    def wrap(
        cls,
        payload: P,
        *,
        source: str,
        correlation_id: str,
        causation_id: UUID | None = None,
        event_id: UUID | None = None,
    ) -> "Envelope[P]":
        envelope_class: type[Envelope[P]] = envelope_for(type(payload))
        return envelope_class(
            id=event_id or uuid4(),
            type=payload.event_type,
            source=source,
            subject=payload.subject_id,
            schemaversion=payload.schema_version,
            correlationid=correlation_id,
            causationid=causation_id,
            data=payload,
        )

    @property
    def topic(self) -> Topic:
        return self.data.topic


@functools.cache
def envelope_for(payload_class: type[P]) -> type[Envelope[P]]:
    """The envelope parametrised by one payload class, so it (de)serialises every field.

    Cached: pydantic builds a new class on each parametrisation it does not keep.
    """
    parametrised: type[Envelope[P]] = cast(Any, Envelope)[payload_class]
    return parametrised
