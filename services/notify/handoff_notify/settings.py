"""The notify service's configuration, from its environment."""

import os
import tempfile
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from handoff_notify import CONSUMER_GROUP
from handoff_notify.domain.content import link_room, reminder_link_room
from handoff_notify.domain.delivery import RetryPolicy
from handoff_notify.domain.links import FOLLOW_UP_PATH_CHARACTERS, LINK_PATH_CHARACTERS
from handoff_notify.domain.throttle import ThrottleRules
from handoff_platform.settings import PlatformSettings
from handoff_schemas.vocabulary import E164Phone


class Delivery(StrEnum):
    LIVE = "live"  # Twilio-compatible SMS and voice, SMTP, webhooks
    SANDBOX = "sandbox"  # every message kept in the database and shown on /sandbox


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class NotifySettings(PlatformSettings):
    consumer_group: str = CONSUMER_GROUP
    database_pool_size: int = 10
    handoff_environment: Environment = Environment.DEVELOPMENT
    notify_delivery: Delivery = Delivery.LIVE
    notify_public_url: str = Field(
        "http://127.0.0.1:8003", description="Where coaches' phones and Twilio reach this service."
    )
    notify_link_secret: SecretStr = Field(description="Signs the links in pages.")
    follow_up_link_secret: SecretStr | None = Field(
        None,
        description="Signs the referral service's visit (/v/) and follow-up (/f/) links that "
        "notify mints: the same value the referral service is given. Unset: no follow-up "
        "reminder is sent and the coach's page links no visit record.",
    )
    referral_public_url: str = Field(
        "http://127.0.0.1:8001",
        description="Where coaches' phones reach the referral service's visit and follow-up "
        "pages (the base of those links).",
    )

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_base_url: str = "https://api.twilio.com"
    twilio_from_number: str | None = None

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_start_tls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Handoff <pages@handoff.invalid>"

    webhook_secret: SecretStr | None = None
    webhook_slack_format: bool = False

    provider_timeout_seconds: float = 10.0
    sending_deadline_seconds: float = 30.0
    send_attempts: int = 5
    notice_retry_seconds: float = Field(
        900.0,
        description="How long a supervisor's notice is retried through a provider outage "
        "(5xx, timeouts), from the referral going unassigned.",
    )
    channel_fallback_seconds: float = Field(
        120.0, description="Page the next contact method if one is not answered by then."
    )
    site_channel_fallback_seconds: dict[str, float] = Field(
        default_factory=dict, description='Per-site delays, e.g. {"md-mercy": 60}.'
    )
    notify_program_name: str = Field(
        "Handoff peer recovery paging", description="Named in the answer to HELP."
    )
    notify_supervisor_phone: str | None = Field(
        None, description="The supervisor line the answer to HELP gives coaches."
    )
    site_supervisor_phones: dict[str, E164Phone] = Field(
        default_factory=dict,
        description='Per-site supervisor lines for HELP, e.g. {"vt-uvm": "+18025550100"}: a '
        "coach hears the line of the site they were last paged for, else "
        "NOTIFY_SUPERVISOR_PHONE.",
    )
    notify_admin_token: SecretStr | None = Field(
        None, description="Bearer token of the admin API; without one it refuses every call."
    )
    blocked_methods_gauge_seconds: float = Field(
        15.0, description="How often the gauge of opted-out and unreachable methods is read."
    )

    notify_report_spool: Path = Field(
        Path(".handoff/notify/delivery-reports.jsonl"),
        description="Where this replica keeps delivery reports taken while PostgreSQL is "
        "away, until applied; relative to the working directory. On a disk that outlives "
        "the process (decision 0021). SMS replies taken then wait beside it, in "
        "sms-replies.jsonl, so each replica needs a directory of its own: two sharing one "
        "would apply each other's replies. Its directory must be writable at start (else "
        "exit 2).",
    )

    notices_per_15_minutes: int = Field(
        5, description="Supervisor notices (a digest counting once) per destination."
    )
    offers_per_15_minutes: int = 20

    @field_validator("notify_report_spool")
    @classmethod
    def _spool_writable(cls, path: Path) -> Path:
        """The spools (delivery reports, and SMS replies beside them) must be writable from
        the start: found unwritable during an outage, what they should keep is lost."""
        directory = path.parent
        existing = directory
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{existing} is not a directory, so {directory} cannot be made")
        if existing == directory:
            try:
                with tempfile.TemporaryFile(dir=directory):
                    pass
            except OSError as error:
                raise ValueError(f"cannot write in {directory}: {error.strerror}") from None
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"cannot make {directory}: {existing} is not writable")
        if path.exists() and not os.access(path, os.W_OK):
            raise ValueError(f"cannot append to {path}")
        return path

    @field_validator("notify_public_url")
    @classmethod
    def _links_fit_one_segment(cls, url: str) -> str:
        """An offer SMS is one GSM-7 segment; a long public URL would make every page two
        (issue #12 F6), so it is refused at start-up rather than found on a coach's phone."""
        longest = link_room() - LINK_PATH_CHARACTERS
        if len(url.rstrip("/")) > longest:
            raise ValueError(
                f"NOTIFY_PUBLIC_URL is {len(url.rstrip('/'))} characters; at most {longest} "
                "keep an offer SMS with its link in one 160-character segment"
            )
        return url

    @field_validator("referral_public_url")
    @classmethod
    def _reminder_fits_one_segment(cls, url: str) -> str:
        """A follow-up reminder is one GSM-7 segment with its /f/ link, whatever the
        window and however short the site's name is cut."""
        longest = reminder_link_room() - FOLLOW_UP_PATH_CHARACTERS
        if len(url.rstrip("/")) > longest:
            raise ValueError(
                f"REFERRAL_PUBLIC_URL is {len(url.rstrip('/'))} characters; at most {longest} "
                "keep a follow-up reminder with its link in one 160-character segment"
            )
        return url

    @model_validator(mode="after")
    def _sandbox_never_in_production(self) -> Self:
        if self.notify_delivery is Delivery.SANDBOX:
            if self.handoff_environment is Environment.PRODUCTION:
                raise ValueError(
                    "NOTIFY_DELIVERY=sandbox is refused when HANDOFF_ENVIRONMENT=production: "
                    "pages would never reach a coach"
                )
            return self
        missing = [
            name
            for name, value in (
                ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                ("TWILIO_FROM_NUMBER", self.twilio_from_number),
                ("SMTP_HOST", self.smtp_host),
                ("WEBHOOK_SECRET", self.webhook_secret),
            )
            if value is None
        ]
        if missing:
            raise ValueError(f"NOTIFY_DELIVERY=live needs {', '.join(missing)}")
        return self

    def supervisor_phone(self, site_id: str | None) -> str | None:
        """The supervisor line HELP gives a coach last paged for `site_id` (None: never)."""
        if site_id is not None and site_id in self.site_supervisor_phones:
            return self.site_supervisor_phones[site_id]
        return self.notify_supervisor_phone

    def fallback_delay(self, site_id: str) -> timedelta:
        seconds = self.site_channel_fallback_seconds.get(site_id, self.channel_fallback_seconds)
        return timedelta(seconds=seconds)

    def start_up_warnings(self) -> list[str]:
        """What a deployment likely forgot, logged once at start-up (no secrets): live
        paging without NOTIFY_SUPERVISOR_PHONE answers HELP with no supervisor line."""
        warnings = []
        if self.notify_delivery is Delivery.LIVE and not self.notify_supervisor_phone:
            warnings.append(
                "NOTIFY_SUPERVISOR_PHONE is not set: the answer to HELP gives coaches no "
                "supervisor line"
            )
        if self.follow_up_link_secret is None:
            warnings.append(
                "FOLLOW_UP_LINK_SECRET is not set: follow-up reminders are not sent and "
                "coaches' pages link no visit record"
            )
        return warnings

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.send_attempts)

    @property
    def throttle_rules(self) -> ThrottleRules:
        return ThrottleRules(
            notices_per_window=self.notices_per_15_minutes,
            offers_per_window=self.offers_per_15_minutes,
        )
