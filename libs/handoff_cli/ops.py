"""`handoff ops …`: what the runbooks ask an SRE to run."""

import asyncio
import contextlib
from typing import Annotated

import typer
from prometheus_client import start_http_server

from handoff_platform.dead_letters import replay_dead_letters
from handoff_platform.lag import LagSampler, export_lag_forever, exporter_registry
from handoff_platform.settings import KafkaSettings, settings_or_exit

app = typer.Typer(help="Operations: dead letters, consumer lag.", no_args_is_help=True)


def _kafka() -> KafkaSettings:
    """KAFKA_BOOTSTRAP_SERVERS and the TLS/SASL settings; a bad one is a usage error (exit 2)."""
    return settings_or_exit(KafkaSettings)


@app.command("replay-dead-letters")
def replay_command(
    group: Annotated[str, typer.Option(help="The consumer group, e.g. handoff-notify.")],
    dry_run: Annotated[bool, typer.Option(help="Count, send nothing.")] = False,
) -> None:
    """Send a group's dead-lettered events back to their topics, once the cause is fixed."""
    kafka = _kafka()
    summary = asyncio.run(
        replay_dead_letters(
            kafka.kafka_bootstrap_servers, group, dry_run=dry_run, security=kafka.kafka_security
        )
    )
    verb = "would replay" if dry_run else "replayed"
    for topic, count in sorted(summary.replayed.items()):
        typer.echo(f"{verb} {count} from {summary.dead_letter_topic} to {topic}")
    if not summary.replayed:
        typer.echo(f"nothing to replay in {summary.dead_letter_topic}")
    if summary.unroutable:
        typer.echo(f"{summary.unroutable} without an original topic were left in place", err=True)


@app.command("lag-exporter")
def lag_exporter_command(
    group: Annotated[
        list[str],
        typer.Option(
            help="GROUP=TOPIC[,TOPIC…], e.g. handoff-notify=handoff.dispatch; repeatable."
        ),
    ],
    port: Annotated[int, typer.Option()] = 9309,
    interval: Annotated[float, typer.Option(help="Seconds between samples.")] = 5.0,
) -> None:
    """Serve consumer lag per group and partition on /metrics, read from the broker alone:
    it keeps reporting while every consumer of a group is stopped, and through a Kafka outage
    (the sampler is a supervised loop, restarted after any error but cancellation)."""
    groups: dict[str, list[str]] = {}
    for spec in group:
        name, _, topics = spec.partition("=")
        if not topics:
            raise typer.BadParameter(f"{spec!r}: expected GROUP=TOPIC[,TOPIC…]")
        groups[name] = topics.split(",")
    start_http_server(port, addr="127.0.0.1", registry=exporter_registry())
    typer.echo(f"consumer lag of {', '.join(groups)} on http://127.0.0.1:{port}/metrics")
    kafka = _kafka()
    sampler = LagSampler(kafka.kafka_bootstrap_servers, groups, kafka.kafka_security)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(export_lag_forever(sampler, interval))
