"""OpenTelemetry traces across HTTP, the outbox, Kafka and the consumers.

Exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only
variant) is set; otherwise the API's no-op tracer runs and costs next to nothing.

A referral's trace starts at the hospital's request. The outbox row keeps the W3C
trace context of the transaction that wrote it; the relay sends it as the Kafka
message's `traceparent` header; the consumer continues the trace from there, and
the events its handler writes carry it on to the next service. Each log line
written inside a span carries its `trace_id`, beside the correlation id.
"""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind

tracer = trace.get_tracer("handoff")
TRACEPARENT = "traceparent"


def configure_tracing(service: str) -> TracerProvider | None:
    """Export spans over OTLP if an endpoint is configured; the provider, to flush on exit."""
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": f"handoff-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, to keep beside an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def span(
    name: str, kind: SpanKind, parent: Mapping[str, str] | None = None, **attributes: str
) -> Iterator[Span]:
    """A span, continuing the trace in `parent` (headers holding a `traceparent`) if given."""
    context = propagate.extract(dict(parent)) if parent is not None else None
    with tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=attributes
    ) as current:
        yield current


def trace_id() -> str | None:
    """The current trace's id in hex, as tracing backends show it; None outside a span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
