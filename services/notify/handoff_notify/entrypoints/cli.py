"""`handoff notify …`: run the service that pages coaches."""

from typing import Annotated

import typer
import uvloop

from handoff_notify import SCHEMA
from handoff_notify.app import NotifyRuntime
from handoff_notify.settings import NotifySettings
from handoff_platform.audit import audit_cli
from handoff_platform.runtime import instrumented
from handoff_platform.settings import settings_or_exit
from handoff_platform.startup import serve_when_started

app = typer.Typer(help="The notify service: pages and answers.", no_args_is_help=True)
app.add_typer(audit_cli(SCHEMA), name="audit")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8003,
) -> None:
    """Run the consumers, the delivery worker, the relay, the timers and the coach pages."""
    settings = settings_or_exit(NotifySettings)
    with instrumented("notify", settings.log_level, settings.log_format):
        uvloop.run(_serve(settings, host, port))


async def _serve(settings: NotifySettings, host: str, port: int) -> None:
    await serve_when_started(
        lambda: NotifyRuntime.start(settings),
        lambda runtime: runtime.app,
        NotifyRuntime.stop,
        host,
        port,
    )
