"""Structured JSON logs that carry the correlation id of the referral being worked on.

The correlation id lives in a context variable, so every log line written while
one request or one event is handled carries it without being passed around.
Log records hold identifiers and codes only: never a patient's data.
"""

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from handoff_platform.tracing import trace_id

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)


class _CorrelationFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
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


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = json_handler(service)
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
