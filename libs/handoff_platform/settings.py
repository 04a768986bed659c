from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """For tools that need only the broker."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"


class PlatformSettings(BaseSettings):
    """What every service reads from its environment; each service extends it with its own."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str = Field(description="postgresql://user@host:port/database")
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    log_level: str = "INFO"
