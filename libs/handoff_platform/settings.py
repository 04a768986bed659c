"""Settings every service and tool reads from its environment.

Kafka is reached through a list of bootstrap servers, as every production cluster
is: `KAFKA_BOOTSTRAP_SERVERS=kafka-1:9092,kafka-2:9092,kafka-3:9092`. The list is
parsed here, once, into `host:port` entries; the Kafka clients get it as a list,
never as one string (FastStream would take the whole string for a single host).
"""

import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
DEFAULT_KAFKA_PORT = 9092
# A DNS name or an IPv4 address: letters, digits, dots, hyphens, underscores (Docker
# service names have them).
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def parse_bootstrap_servers(value: str | Iterable[str]) -> tuple[str, ...]:
    """`"a:9092, b:9093"` (or `["a:9092", "b:9093"]`) → `("a:9092", "b:9093")`.

    Entries are `host:port`, `host` (port 9092), or `[ipv6]:port`; spaces around
    entries and commas are ignored, as is one trailing comma. Duplicates are dropped,
    keeping the first. Raises ValueError naming KAFKA_BOOTSTRAP_SERVERS and the entry
    for an empty list, an empty entry between commas, a bad host or a port outside
    1-65535.
    """
    entries = [e.strip() for e in (value.split(",") if isinstance(value, str) else value)]
    if len(entries) > 1 and not entries[-1]:
        entries.pop()  # "a:9092,b:9092," from a templated list
    parsed: list[str] = []
    for entry in entries if any(entries) else ():
        server = _parse_entry(entry)
        if server not in parsed:
            parsed.append(server)
    if not parsed:
        raise ValueError(f"{BOOTSTRAP_ENV} is empty: expected host:port[,host:port…]")
    return tuple(parsed)


def _parse_entry(entry: str) -> str:
    def bad(why: str) -> ValueError:
        return ValueError(f"{BOOTSTRAP_ENV} entry {entry!r}: {why}; expected host:port")

    if not entry:
        raise ValueError(f"{BOOTSTRAP_ENV} has an empty entry between two commas")
    if entry.startswith("["):
        host, closed, rest = entry[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("not an IPv6 address in brackets") from None
        if not closed or (rest and not rest.startswith(":")):
            raise bad("not [ipv6]:port")
        port_text = rest[1:] if rest else str(DEFAULT_KAFKA_PORT)
        host = f"[{host}]"
    else:
        host, has_port, port_text = entry.partition(":")
        port_text = port_text if has_port else str(DEFAULT_KAFKA_PORT)
        if not _HOST_NAME.fullmatch(host):
            raise bad("not a host name or address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise bad(f"port {port_text!r} is not a number from 1 to 65535")
    return f"{host}:{int(port_text)}"


BootstrapServers = Annotated[tuple[str, ...], NoDecode, BeforeValidator(parse_bootstrap_servers)]
"""A settings field holding the parsed `KAFKA_BOOTSTRAP_SERVERS` list."""


class KafkaSettings(BaseSettings):
    """For tools that need only the broker."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    kafka_bootstrap_servers: BootstrapServers = ("127.0.0.1:9092",)


class PlatformSettings(BaseSettings):
    """What every service reads from its environment; each service extends it with its own."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str = Field(description="postgresql://user@host:port/database")
    kafka_bootstrap_servers: BootstrapServers = ("127.0.0.1:9092",)
    log_level: str = "INFO"
