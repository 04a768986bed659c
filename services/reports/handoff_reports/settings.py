"""The reports service's settings, from its environment."""

from pydantic import SecretStr

from handoff_platform.settings import PlatformSettings
from handoff_reports import CONSUMER_GROUP


class ReportsSettings(PlatformSettings):
    """PlatformSettings, and: the consumer group, the pool size, and REPORTS_ADMIN_TOKEN
    (bearer token of the reports API; unset: the API refuses every call)."""

    consumer_group: str = CONSUMER_GROUP
    database_pool_size: int = 5
    reports_admin_token: SecretStr | None = None
