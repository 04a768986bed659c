"""Settings every service and tool reads from its environment.

Kafka is reached through a list of bootstrap servers, as every production cluster
is: `KAFKA_BOOTSTRAP_SERVERS=kafka-1:9092,kafka-2:9092,kafka-3:9092`. The list is
parsed here, once, into `host:port` entries; the Kafka clients get it as a list,
never as one string (FastStream would take the whole string for a single host).
"""

import ipaddress
import os
import re
import ssl
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self, TypeVar

from faststream.security import BaseSecurity, SASLScram256, SASLScram512
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from handoff_platform.logs import LogFormat

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


class KafkaSecurityProtocol(StrEnum):
    """Kafka's own names for how a client talks to a listener."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSettings(BaseSettings):
    """How to reach Kafka: the bootstrap list, and TLS and SASL/SCRAM when the listener asks.

    `KAFKA_SECURITY_PROTOCOL=SASL_SSL` with `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`
    (SCRAM-SHA-512 unless `KAFKA_SASL_MECHANISM` says SCRAM-SHA-256) and `KAFKA_SSL_CA_FILE`
    (PEM; the system's trusted CAs when unset) is how a Strimzi cluster is reached;
    `KAFKA_SSL_CERT_FILE` and `KAFKA_SSL_KEY_FILE` add a client certificate (mutual TLS).
    Raises pydantic's ValidationError naming the variable when one is missing or unreadable.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    kafka_bootstrap_servers: BootstrapServers = ("127.0.0.1:9092",)
    kafka_security_protocol: KafkaSecurityProtocol = KafkaSecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: FilePath | None = None
    kafka_ssl_cert_file: FilePath | None = None
    kafka_ssl_key_file: FilePath | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together")
        uses_tls = protocol in (KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL)
        if not uses_tls and (self.kafka_ssl_ca_file or self.kafka_ssl_cert_file):
            raise ValueError(f"KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL={protocol}")
        return self

    @property
    def kafka_security(self) -> BaseSecurity | None:
        """FastStream's description of the connection (None: plaintext, no login).

        `handoff_platform.kafka.client_options` turns it into aiokafka's arguments.
        """
        protocol = self.kafka_security_protocol
        if protocol is KafkaSecurityProtocol.PLAINTEXT:
            return None
        context = None
        if protocol in (KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL):
            context = ssl.create_default_context(cafile=self.kafka_ssl_ca_file)
            if self.kafka_ssl_cert_file is not None:
                context.load_cert_chain(self.kafka_ssl_cert_file, self.kafka_ssl_key_file)
        if protocol is KafkaSecurityProtocol.SSL:
            return BaseSecurity(ssl_context=context, use_ssl=True)
        password = self.kafka_sasl_password  # both set: checked when the settings were read
        scram = SASLScram512 if self.kafka_sasl_mechanism == "SCRAM-SHA-512" else SASLScram256
        return scram(
            self.kafka_sasl_username or "",
            password.get_secret_value() if password else "",
            ssl_context=context,
            use_ssl=context is not None,
        )


PgSslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
"""libpq's `sslmode` values, as `PGSSLMODE` takes them."""

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _readable(path: Path) -> Path:
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not readable")
    return path


ReadableFile = Annotated[FilePath, AfterValidator(_readable)]
"""A settings field naming a file that exists and this process may read."""


class PlatformSettings(KafkaSettings):
    """What every service reads from its environment; each service extends it with its own.

    PostgreSQL's TLS and password come from libpq's variables, which asyncpg reads:
    `PGSSLMODE` (e.g. verify-full), `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGPASSWORD`,
    or the same as `DATABASE_URL` parameters (`?sslmode=verify-full&sslrootcert=…`).
    The variables are checked here at start: `PGSSLMODE` must be one of libpq's modes and
    `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` must name readable files when set; `LOG_LEVEL`
    must be a standard level name. Raises pydantic's ValidationError naming the variable.
    """

    database_url: str = Field(description="postgresql://user@host:port/database")
    log_level: str = Field(
        default="INFO",
        description="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)",
    )
    log_format: LogFormat = LogFormat.AUTO
    loop_stuck_seconds: float = Field(
        default=120.0,
        gt=0,
        description="how long a loop may fail every pass with a bug before /healthz is 503",
    )
    # Read here only to be checked at start (asyncpg reads them itself): a typo in the
    # mode, or a certificate path that is not there, was a traceback or a start-up that
    # retried for ever as if the database were down.
    pgsslmode: PgSslMode | None = None
    pgsslrootcert: ReadableFile | None = None
    pgsslcert: ReadableFile | None = None
    pgsslkey: ReadableFile | None = None

    @field_validator("log_level")
    @classmethod
    def _standard_level(cls, level: str) -> str:
        """A standard level name, upper-cased (`info` → `INFO`)."""
        name = level.strip().upper()
        if name not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return name

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, url: str) -> str:
        """A libpq URL (postgresql:// or postgres://) naming a database; the value itself is
        never quoted back (it may carry a password)."""
        scheme, separator, rest = url.partition("://")
        if scheme not in ("postgresql", "postgres") or not separator:
            raise ValueError("must start with postgresql:// (postgresql://user@host:port/database)")
        if not rest.partition("?")[0].partition("/")[2]:
            raise ValueError("names no database (postgresql://user@host:port/database)")
        return url


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def configuration_problem(error: ValidationError) -> str:
    """One line naming each variable and what is wrong with it, from pydantic's errors.

    Never quotes the value given: it may be a password or a URL that carries one.
    """
    problems = []
    for detail in error.errors(include_input=False, include_url=False):
        message = str(detail["msg"]).removeprefix("Value error, ")
        variable = ".".join(str(part) for part in detail["loc"]).upper()
        if detail["type"] == "missing":
            message = "is not set"
        if variable and variable not in message:
            message = (
                f"{variable} {message}" if message == "is not set" else f"{variable}: {message}"
            )
        problems.append(message)
    return "configuration error: " + "; ".join(problems)


def settings_or_exit(settings_class: type[SettingsT]) -> SettingsT:
    """`settings_class()` read from the environment; on a configuration error, print one line
    naming the variable to stderr and exit with status 2 (a usage error), no traceback."""
    try:
        return settings_class()
    except ValidationError as error:
        print(configuration_problem(error), file=sys.stderr)
        raise SystemExit(2) from None
