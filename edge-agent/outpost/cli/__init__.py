"""The ``outpost`` command line: thin commands over the library, no logic of their own.

Every command runs inside :class:`outpost.cli.boundary.Boundary` (the root group), which turns
any exception a command does not handle into one line and an exit code; help is click's plain
layout (``rich_markup_mode=None``, inherited by every sub-command), so option help is never read
as Rich markup.
"""

from __future__ import annotations

import typer

from outpost import __version__
from outpost.cli import (
    agent,
    bundle,
    deploy,
    device,
    fleet,
    fleet_devices,
    hub,
    keys,
    manifests,
    model,
    rollout,
    routes,
    trust,
    watch,
)
from outpost.cli.boundary import EXIT_CODES_HELP, Boundary, enable_debug

__all__ = ["app", "main"]

app = typer.Typer(
    name="outpost",
    cls=Boundary,
    help="Outpost: an offline-first edge module runtime that runs Azure IoT Edge deployment manifests.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(manifests.app, name="manifest")
app.add_typer(routes.app, name="route")
app.add_typer(agent.app, name="agent")
app.add_typer(hub.app, name="hub")
app.add_typer(fleet.app, name="fleet")
app.add_typer(fleet_devices.app, name="device")
app.add_typer(deploy.app, name="deploy")
app.add_typer(model.app, name="model")
app.add_typer(rollout.app, name="rollout")
app.add_typer(keys.app, name="keys")
app.add_typer(bundle.app, name="bundle")
agent.app.add_typer(trust.app, name="trust")
app.command("list")(device.list_modules)
app.command("logs")(device.logs)
app.command("restart")(device.restart)
app.command("check")(device.check)
app.command("watch")(watch.watch)
app.command("build")(__import__("outpost.cli.build", fromlist=["build"]).build)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"outpost {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(  # noqa: ARG001 (acted on by its eager callback)
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of an unexpected error (or OUTPOST_DEBUG=1)."
    ),
) -> None:
    """Outpost command line."""
    if debug:
        enable_debug(ctx)


def main() -> None:
    """Console-script entry point."""
    app()
