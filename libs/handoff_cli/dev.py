"""`handoff dev up|down|status|env|pg`: Kafka and PostgreSQL for local work, without Docker."""

import json
import os
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from handoff_devenv import KafkaCluster, PortInUse, PostgresCluster
from handoff_devenv.kafka import KAFKA_VERSION, REPO_ROOT, kafka_classpath

app = typer.Typer(
    help="Local Kafka and PostgreSQL for development, without Docker.", no_args_is_help=True
)

pg = typer.Typer(
    help="Stop, start or restart the dev PostgreSQL, keeping its port and settings.",
    no_args_is_help=True,
)
app.add_typer(pg, name="pg")

STATE_DIR = Path(os.environ.get("HANDOFF_DEV_DIR", REPO_ROOT / ".handoff" / "dev"))
STATE_FILE = STATE_DIR / "state.json"


def _load() -> tuple[KafkaCluster | None, PostgresCluster | None]:
    if not STATE_FILE.exists():
        return None, None
    state = json.loads(STATE_FILE.read_text())
    kafka = KafkaCluster(
        STATE_DIR / "kafka",
        ports=state["kafka"]["ports"],
        brokers=len(state["kafka"]["ports"]),
        controller_ports=state["kafka"]["controller_ports"],
    )
    postgres = None
    if state.get("postgres"):
        postgres = PostgresCluster(STATE_DIR / "postgres", port=state["postgres"]["port"])
    return kafka, postgres


def _save(kafka: KafkaCluster, postgres: PostgresCluster | None) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state = {
        "kafka": {"ports": kafka.ports, "controller_ports": kafka.controller_ports},
        "postgres": {"port": postgres.port} if postgres else None,
    }
    STATE_FILE.write_text(json.dumps(state, indent=2))


def environment(kafka: KafkaCluster, postgres: PostgresCluster | None) -> dict[str, str]:
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    env["DATABASE_URL"] = postgres.url if postgres else os.environ["DATABASE_URL"]
    return env


@app.command()
def fetch() -> None:
    """Resolve the Kafka broker's jars from Maven Central into the cache (once)."""
    typer.echo(f"Kafka {KAFKA_VERSION} classpath: {kafka_classpath()}")


@app.command()
def up(
    brokers: Annotated[int, typer.Option(help="1, or 3 for a replicated cluster.")] = 1,
    kafka_port: Annotated[
        int, typer.Option(help="First broker's port; more brokers take the next ones.")
    ] = 9092,
    postgres_port: Annotated[int, typer.Option()] = 5433,
) -> None:
    """Start Kafka (KRaft, from its jars) and PostgreSQL 15, and wait until both answer.

    Run again after a crash or a kill, it starts what stopped, on its own data and ports,
    and leaves what runs alone."""
    kafka, postgres = _load()
    if kafka is not None:
        _bring_back(kafka, postgres)
        return
    started = time.monotonic()
    kafka = KafkaCluster(
        STATE_DIR / "kafka", ports=[kafka_port + i for i in range(brokers)], brokers=brokers
    )
    use_external_db = bool(os.environ.get("DATABASE_URL"))
    postgres = None if use_external_db else PostgresCluster(STATE_DIR / "postgres", postgres_port)
    started_postgres = False
    try:
        if postgres:
            typer.echo(f"starting PostgreSQL 15 on 127.0.0.1:{postgres_port} ...")
            postgres.start()
            started_postgres = True
        else:
            typer.echo("DATABASE_URL is set: using that database, not starting PostgreSQL")
        typer.echo(f"starting Apache Kafka ({brokers} broker{'s' if brokers > 1 else ''}) ...")
        kafka.start()
    except PortInUse as conflict:
        if postgres and started_postgres:
            postgres.stop()
        typer.echo(str(conflict), err=True)
        raise typer.Exit(2) from None
    except Exception:
        if postgres and started_postgres:
            postgres.stop()
        raise
    _save(kafka, postgres)
    typer.echo(f"up in {time.monotonic() - started:.1f} s; export these to use it:")
    _print_env(environment(kafka, postgres))


def _bring_back(kafka: KafkaCluster, postgres: PostgresCluster | None) -> None:
    """Start what a previous `dev up` started and has since stopped, on its own data."""
    brought_back = []
    try:
        if postgres is not None and not postgres.running():
            typer.echo(
                f"starting PostgreSQL 15 again on 127.0.0.1:{postgres.port}, its data kept ..."
            )
            postgres.start()
            brought_back.append("PostgreSQL")
        if not kafka.running():
            typer.echo("starting the stopped Kafka brokers again, their data kept ...")
            nodes = kafka.resume()
            brought_back.append(f"Kafka broker{'s' if len(nodes) > 1 else ''} {nodes}")
    except PortInUse as conflict:
        typer.echo(str(conflict), err=True)
        raise typer.Exit(2) from None
    if brought_back:
        typer.echo(f"started again: {', '.join(brought_back)}; export these to use it:")
    else:
        typer.echo("already up:")
    _print_env(environment(kafka, postgres))


@app.command()
def down() -> None:
    """Stop what `handoff dev up` started (the data goes with it)."""
    kafka, postgres = _load()
    if kafka is None:
        typer.echo("nothing is running")
        return
    kafka.stop()
    if postgres:
        postgres.destroy()
    STATE_FILE.unlink()
    typer.echo("stopped Kafka and PostgreSQL; their data is gone")


@app.command()
def status() -> None:
    """Say what is running, and where."""
    kafka, postgres = _load()
    if kafka is None:
        typer.echo("down")
        raise typer.Exit(1)
    typer.echo(f"kafka     {'up' if kafka.running() else 'DOWN'}  {kafka.bootstrap_servers}")
    if postgres:
        typer.echo(f"postgres  {'up' if postgres.running() else 'DOWN'}  {postgres.url}")
    if not kafka.running() or (postgres and not postgres.running()):
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print `export` lines for the running environment: eval "$(handoff dev env)"."""
    kafka, postgres = _load()
    if kafka is None:
        typer.echo("handoff dev up first", err=True)
        raise typer.Exit(1)
    _print_env(environment(kafka, postgres))


def _print_env(values: dict[str, str]) -> None:
    for key, value in values.items():
        typer.echo(f"export {key}={shlex.quote(value)}")  # eval-safe, whatever the URL holds


def _dev_postgres() -> PostgresCluster:
    _, postgres = _load()
    if postgres is None:
        typer.echo("no dev PostgreSQL: handoff dev up first (without DATABASE_URL)", err=True)
        raise typer.Exit(1)
    return postgres


_IMMEDIATE = typer.Option(
    "--immediate", help="Kill every backend at once, as a crash does; recovery runs on start."
)


@pg.command("restart")
def pg_restart(immediate: Annotated[bool, _IMMEDIATE] = False) -> None:
    """Restart the dev PostgreSQL (`pg_ctl restart -m fast`, or `-m immediate`) on its port."""
    postgres = _dev_postgres()
    postgres.write_settings()
    postgres.restart("immediate" if immediate else "fast")
    typer.echo(f"postgres restarted  {postgres.url}")


@pg.command("stop")
def pg_stop(immediate: Annotated[bool, _IMMEDIATE] = False) -> None:
    """Stop the dev PostgreSQL, keeping its data (`handoff dev pg start` brings it back)."""
    postgres = _dev_postgres()
    postgres.stop("immediate" if immediate else "fast")
    typer.echo("postgres stopped")


@pg.command("start")
def pg_start() -> None:
    """Start the stopped dev PostgreSQL again, with its data, port and settings."""
    postgres = _dev_postgres()
    postgres.start()
    typer.echo(f"postgres up  {postgres.url}")
