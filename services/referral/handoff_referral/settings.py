from handoff_platform.settings import PlatformSettings


class ReferralSettings(PlatformSettings):
    max_body_bytes: int = 64 * 1024
    database_pool_size: int = 10
