from typing import Any

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator

from handoff_platform.settings import PlatformSettings
from handoff_referral import CONSUMER_GROUP
from handoff_referral.adapters.contact_vault import key_texts


class ReferralSettings(PlatformSettings):
    consumer_group: str = CONSUMER_GROUP
    max_body_bytes: int = 64 * 1024
    database_pool_size: int = 10
    mllp_port: int = 2575
    mllp_idle_seconds: float = Field(
        default=300.0,
        gt=0,
        description="An MLLP connection on which no message begins for this long is closed "
        "(engines reconnect); stuck peers and port scanners cannot hold sockets for ever.",
    )
    mllp_frame_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A frame begun (start block read) must end within this long, or the "
        "connection is closed without an ACK (the engine resends).",
    )
    referral_admin_token: SecretStr | None = Field(
        default=None,
        description="Opens /v1/admin (site webhooks, the console's sites and board); without "
        "it every admin call is refused.",
    )
    webhook_allow_http: bool = Field(
        default=False, description="Accept http:// callback URLs (development and tests only)."
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_initial_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(default=24 * 3600.0, gt=0)
    webhook_poll_seconds: float = Field(default=0.25, gt=0)
    webhook_settle_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a recorded step waits before it is sent, so an earlier step "
        "recorded a moment later (steps come from two topics) still goes first.",
    )
    follow_up_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated Fernet keys that encrypt follow-up contact details at "
        "rest: the first encrypts, all decrypt (rotate with `handoff referral follow-ups "
        "rotate-keys`). Without them a patient's follow-up consent cannot be recorded.",
    )
    follow_up_link_secret: SecretStr | None = Field(
        default=None,
        description="Verifies the visit (/v/) and follow-up (/f/) links notify mints; notify "
        "is given the same secret. Without it those pages answer 404.",
    )

    @field_validator("follow_up_keys", mode="before")
    @classmethod
    def _empty_keys_are_unset(cls, keys: Any) -> Any:
        """`FOLLOW_UP_KEYS=` (or only spaces and commas) means no keys, as when unset."""
        return None if _blank(keys) else keys

    @field_validator("follow_up_keys")
    @classmethod
    def _fernet_keys(cls, keys: SecretStr | None) -> SecretStr | None:
        """Each comma-separated key must be a Fernet key; the message names the key by its
        position, never by its value."""
        if keys is None:
            return None
        texts = key_texts(keys.get_secret_value())
        for position, text in enumerate(texts, start=1):
            try:
                Fernet(text)
            except ValueError:
                raise ValueError(
                    f"key {position} of {len(texts)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from None
        return keys


def _blank(keys: Any) -> bool:
    text = keys.get_secret_value() if isinstance(keys, SecretStr) else keys
    return isinstance(text, str) and not key_texts(text)


class ReferralServerSettings(ReferralSettings):
    """The settings of `handoff referral serve`: the follow-up keys are required there, so
    a service that would take consent it cannot seal, or show coaches numbers it cannot
    open, does not start (one line naming FOLLOW_UP_KEYS, exit 2). The CLIs keep
    ReferralSettings: revoking consent or managing sites needs no key."""

    follow_up_keys: SecretStr = Field(
        description="Comma-separated Fernet keys that encrypt follow-up contact details at "
        "rest: the first encrypts, all decrypt (rotate with `handoff referral follow-ups "
        "rotate-keys`). Required to serve.",
    )

    @field_validator("follow_up_keys", mode="before")
    @classmethod
    def _empty_keys_are_unset(cls, keys: Any) -> Any:
        """Required here: an empty `FOLLOW_UP_KEYS=` is refused as an unset one is."""
        if keys is None or _blank(keys):
            raise ValueError("is not set")
        return keys
