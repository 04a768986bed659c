from pydantic import SecretStr

from handoff_platform.settings import PlatformSettings
from handoff_referral import CONSUMER_GROUP


class ReferralSettings(PlatformSettings):
    consumer_group: str = CONSUMER_GROUP
    max_body_bytes: int = 64 * 1024
    database_pool_size: int = 10
    mllp_port: int = 2575
    referral_admin_token: SecretStr | None = None  # the console's board; none: refused
