"""``outpost fleet serve`` and what every fleet command shares: where the fleet is, and the token.

``--fleet URL`` / ``OUTPOST_FLEET_URL`` and ``--token`` / ``OUTPOST_FLEET_TOKEN``; without a
token, the operator token file a local ``outpost fleet serve`` wrote is used if readable.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from outpost.cli.output import err
from outpost.errors import OutpostError
from outpost.wire.adapters.fleet_http import FleetClient
from outpost.wire.fleet import FleetCallError, Unreachable

__all__ = ["CaOpt", "FleetOpt", "JsonOpt", "TokenOpt", "app", "connect", "default_state_dir"]

DEFAULT_URL = "http://127.0.0.1:9700"

app = typer.Typer(help="Run the fleet service: devices, twins, groups and deployments.", no_args_is_help=True)

FleetOpt = Annotated[
    str,
    typer.Option("--fleet", envvar="OUTPOST_FLEET_URL", help="The fleet's URL.", show_default=True),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="OUTPOST_FLEET_TOKEN",
        help="Operator token (default: the operator-token file of a local fleet's state dir).",
        show_default=False,
    ),
]
CaOpt = Annotated[
    Path | None,
    typer.Option("--ca", envvar="OUTPOST_FLEET_CA", help="CA certificate to trust for an https fleet.", dir_okay=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON document instead.")]


def default_state_dir() -> Path:
    env = os.environ.get("OUTPOST_FLEET_STATE")
    if env:
        return Path(env)
    return Path("/var/lib/outpost/fleet") if os.geteuid() == 0 else Path.home() / ".local/share/outpost/fleet"


def _token(token: str | None) -> str | None:
    if token:
        return token.strip()
    path = default_state_dir() / "operator-token"
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return None


@contextlib.contextmanager
def connect(url: str, token: str | None, ca: Path | None = None) -> Iterator[FleetClient]:
    """A client, and one error boundary: refusals and outages become a sentence and exit 1."""
    if not url.startswith(("http://", "https://")):
        err.print(f"[red]error:[/] --fleet expects an http:// or https:// URL, got {escape(url)!r}")
        raise typer.Exit(2)
    credential = _token(token)
    if credential is not None and not (credential.isascii() and credential.isprintable()):
        err.print("[red]error:[/] the operator token is printable ASCII, as the fleet wrote it: check --token "
                  "or OUTPOST_FLEET_TOKEN")  # fmt: skip
        raise typer.Exit(2)
    if credential is None:
        err.print("[red]error:[/] no operator token: pass --token or set OUTPOST_FLEET_TOKEN "
                  "(the fleet wrote it to STATE_DIR/operator-token on first start)")  # fmt: skip
        raise typer.Exit(2)
    try:
        client = FleetClient(url, credential, ca_file=ca)
    except FleetCallError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(2) from exc
    try:
        yield client
    except Unreachable as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}; is `outpost fleet serve` running there? (--fleet URL)")
        raise typer.Exit(1) from exc
    except FleetCallError as exc:
        for problem in exc.problems:
            typer.echo(f"{problem.pointer or '/'}: {problem.message}", err=True)
        hint = {401: " (check --token)", 403: " (an operator token is needed)"}.get(exc.status, "")
        err.print(f"[red]error:[/] {escape(exc.message)}{hint}")
        raise typer.Exit(1) from exc
    finally:
        client.close()


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@app.command()
def serve(
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Where the SQLite database and the operator token live.")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="OUTPOST_FLEET_DB",
            help="Database URL, e.g. postgresql://user:pw@host/db (default: SQLite in the state dir).",
        ),
    ] = None,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to serve on.")] = "127.0.0.1:9700",
    cert: Annotated[
        Path | None, typer.Option("--cert", help="TLS certificate (PEM); serve https.", exists=True)
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="TLS private key (PEM) for --cert.", exists=True)] = None,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body accepted, in bytes.")] = 1 << 20,
    session_hours: Annotated[
        float, typer.Option("--session-hours", min=0.001, help="A console sign-in ends after this many hours.")
    ] = 12.0,
    session_idle_minutes: Annotated[
        float,
        typer.Option("--session-idle-minutes", min=0.01, help="A console session unused this many minutes ends."),
    ] = 60.0,
    max_model: Annotated[
        int, typer.Option("--max-model", help="Largest model file `outpost model push` may upload, in bytes.")
    ] = 64 << 20,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes sharing the listening socket (instances of one stateless service; "
            "/metrics shows the worker that answers).",
        ),
    ] = 1,
) -> None:
    """Serve the fleet API (OpenAPI at /openapi.json, Prometheus metrics at /metrics).

    On first start it creates an operator token in STATE_DIR/operator-token (mode 0600).
    The service keeps nothing outside its database: start several on one PostgreSQL
    (--db) behind a load balancer to serve one fleet.
    """
    try:
        from outpost.fleet.adapters.server import ServeSettings
        from outpost.fleet.adapters.server import serve as run
    except ModuleNotFoundError as exc:
        if (exc.name or "outpost").partition(".")[0] == "outpost":
            raise
        # A device installs Outpost's core only; the service's libraries are the `fleet` extra.
        err.print(
            f"[red]error:[/] the fleet service needs Outpost's fleet dependencies ({escape(exc.name or '?')} is not "
            "installed): run pip install 'outpost\\[fleet]' (scripts/setup installs them) and try again"
        )
        raise typer.Exit(1) from None

    if (cert is None) != (key is None):
        err.print("[red]error:[/] TLS needs both --cert and --key")
        raise typer.Exit(2)
    host, port = _listen(listen)
    settings = ServeSettings(
        state_dir=state_dir or default_state_dir(),
        db_url=db,
        host=host,
        port=port,
        certfile=cert,
        keyfile=key,
        max_body=max_body,
        session_max_age=session_hours * 3600,
        session_idle=session_idle_minutes * 60,
        max_model=max_model,
        workers=workers,
    )
    try:
        run(settings)
    except OutpostError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
