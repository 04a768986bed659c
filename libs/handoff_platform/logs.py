"""Structured logs that carry the correlation id of the referral being worked on.

JSON lines when stderr is not a terminal (a container, a file, a test): what log
collectors and the tests' PHI scan read. Human-readable lines, by structlog's console
renderer, when it is a terminal (`make run`). `LOG_FORMAT=json|console` overrides.
The correlation id lives in a context variable, so every log line written while
one request or one event is handled carries it without being passed around.
Log records hold identifiers and codes only: never a patient's data.
"""

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum
from typing import TextIO

import structlog
from pythonjsonlogger.json import JsonFormatter

from handoff_platform.tracing import trace_id

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)


class _CorrelationFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn adds its message again with ANSI colour codes as an extra field; we
        # render (and colour) the plain message ourselves.
        record.__dict__.pop("color_message", None)
        record.correlation_id = correlation_id_var.get()
        record.service = self.service
        current = trace_id()
        if current is not None:
            record.trace_id = current
        return True


def json_handler(service: str, stream: TextIO = sys.stderr) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.addFilter(_CorrelationFilter(service))
    handler.setFormatter(
        JsonFormatter(
            "%(levelname)s %(name)s %(message)s %(service)s %(correlation_id)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601 in UTC
        )
    )
    return handler


def _drop_unset(
    _: object, __: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    return {key: value for key, value in event.items() if value is not None}


def console_handler(service: str, stream: TextIO = sys.stderr) -> logging.Handler:
    """One line per record for a person at a terminal: time (UTC), level, message, logger,
    then the record's fields (service, correlation id, …) as key=value; colours on a TTY."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_CorrelationFilter(service))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=True),
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _drop_unset,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # A plain traceback: the rich one prints local variables, which may hold PHI.
                structlog.dev.ConsoleRenderer(
                    colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
                ),
            ],
        )
    )
    return handler


class LogFormat(StrEnum):
    AUTO = "auto"  # console on a terminal, JSON otherwise
    JSON = "json"
    CONSOLE = "console"


def configure_logging(
    service: str, level: str = "INFO", log_format: LogFormat = LogFormat.AUTO
) -> None:
    """Route every logger to stderr, as JSON or console lines (see the module docstring)."""
    console = log_format is LogFormat.CONSOLE or (
        log_format is LogFormat.AUTO and sys.stderr.isatty()
    )
    handler = console_handler(service) if console else json_handler(service)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka reports every refused reconnect at ERROR; our own metrics and logs say it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@contextmanager
def correlation(correlation_id: str) -> Iterator[None]:
    token = correlation_id_var.set(correlation_id)
    try:
        yield
    finally:
        correlation_id_var.reset(token)
