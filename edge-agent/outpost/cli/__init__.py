"""The ``outpost`` command line: thin commands over the library, no logic of their own."""

from __future__ import annotations

import typer

from outpost import __version__
from outpost.cli import agent, device, hub, manifests, routes, watch

__all__ = ["app", "main"]

app = typer.Typer(
    name="outpost",
    help="Outpost: an offline-first edge module runtime that runs Azure IoT Edge deployment manifests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(manifests.app, name="manifest")
app.add_typer(routes.app, name="route")
app.add_typer(agent.app, name="agent")
app.add_typer(hub.app, name="hub")
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
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Outpost command line."""


def main() -> None:
    """Console-script entry point."""
    app()
