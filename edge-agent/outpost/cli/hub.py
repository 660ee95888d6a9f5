"""``outpost hub run``: the edge hub (Mosquitto + router + store) without Docker."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from outpost.agent.environment import default_device_id
from outpost.cli.output import err
from outpost.errors import ManifestError, OutpostError
from outpost.hub.service import HubService, HubSettings
from outpost.manifest import parse_json

app = typer.Typer(help="Run the edge hub: the local broker, routing and store-and-forward.", no_args_is_help=True)


def _default_state_dir() -> Path:
    if env := os.environ.get("OUTPOST_HUB_STATE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/outpost/hub")
    return Path.home() / ".local" / "state" / "outpost" / "hub"


def _reader(manifest: Path | None, agent_state: Path | None) -> Any:
    """Where the hub reads its manifest: a file, or the agent's stored deployment."""

    def read() -> dict[str, Any] | None:
        try:
            if manifest is not None:
                doc = parse_json(manifest.read_bytes())
            elif agent_state is not None:
                stored = parse_json((agent_state / "deployment.json").read_bytes())
                doc = stored.get("document") if isinstance(stored, dict) else None
            else:
                return None
        except (OSError, ManifestError) as exc:
            logging.getLogger("outpost.hub").warning("cannot read the manifest: %s", exc)
            return None
        return doc if isinstance(doc, dict) else None

    return read


def _first_manifest(path: Path) -> dict[str, Any]:
    """The --manifest file at start: a file that cannot be read or parsed is an error naming it."""
    try:
        doc = parse_json(path.read_bytes())
    except OSError as exc:
        err.print(f"[red]error:[/] --manifest {escape(str(path))}: {escape(exc.strerror or str(exc))}")
        raise typer.Exit(1) from exc
    except ManifestError as exc:
        for p in exc.problems:
            typer.echo(f"{path}: {p.pointer or '/'}: {p.message}", err=True)
        err.print(f"[red]manifest refused[/]: fix the places in {escape(str(path))} named above and start again")
        raise typer.Exit(1) from exc
    if not isinstance(doc, dict):
        typer.echo(f"{path}: /: a manifest is a JSON object", err=True)
        raise typer.Exit(1)
    return doc


@app.command()
def run(
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Manifest to take routes and modules from.", dir_okay=False)
    ] = None,
    agent_state: Annotated[
        Path | None,
        typer.Option(
            "--agent-state",
            envvar="OUTPOST_AGENT_STATE_DIR",
            help="Or: the agent's state dir (follows its deployment).",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            metavar="DIR",
            help="Hub state directory [default: next to --agent-state, else $OUTPOST_HUB_STATE_DIR, else "
            "/var/lib/outpost/hub as root, ~/.local/state/outpost/hub otherwise].",
        ),
    ] = None,
    device_id: Annotated[
        str | None, typer.Option("--device-id", envvar="OUTPOST_DEVICE_ID", help="Device id [default: hostname].")
    ] = None,
    port: Annotated[
        int, typer.Option(envvar="OUTPOST_HUB_PORT", min=1, max=65535, help="Broker port on 127.0.0.1 for modules.")
    ] = 1883,
    tls_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="TLS listener for leaf devices (off when unset).")
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            envvar="OUTPOST_HUB_METRICS_PORT", min=0, max=65535, help="Prometheus metrics port on 127.0.0.1 (0: off)."
        ),
    ] = 9600,
) -> None:
    """Run the hub until SIGINT/SIGTERM, following manifest changes live.

    Every message is on disk before it is acknowledged; module inputs are delivered end to end
    (acknowledged by the receiving module) and upstream sinks drain as soon as they are back.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if manifest is None and agent_state is None:
        err.print("[red]error:[/] give --manifest FILE or --agent-state DIR")
        raise typer.Exit(2)
    read = _reader(manifest, agent_state)
    document = _first_manifest(manifest) if manifest is not None else read()
    if document is None:
        err.print(
            f"[red]error:[/] no deployment in {escape(str(agent_state))} yet: apply one with "
            "`outpost agent apply MANIFEST --state-dir DIR`, or pass --manifest FILE"
        )
        raise typer.Exit(1)
    root = state_dir or (agent_state.parent / "hub" if agent_state else _default_state_dir())
    service = HubService(
        HubSettings(
            state_dir=root,
            device_id=device_id or default_device_id(),
            port=port,
            tls_port=tls_port,
            metrics_port=metrics_port,
            key_root=agent_state.parent if agent_state else root.parent,
        )
    )
    try:
        service.start(document)
    except ManifestError as exc:
        for p in exc.problems:
            typer.echo(f"{manifest or 'the deployment'}: {p.pointer or '/'}: {p.message}", err=True)
        err.print("[red]manifest refused[/]: fix the places above and start again")
        service.stop()
        raise typer.Exit(1) from exc
    except (OutpostError, OSError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        service.stop()
        raise typer.Exit(1) from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    err.print(f"outpost hub running on 127.0.0.1:{port} (state in {root}); Ctrl-C to stop")
    try:
        service.run(stop, source=read)
    finally:
        service.stop()
