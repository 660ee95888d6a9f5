"""``outpost hub run|dead-letters|leaf-key``: the edge hub (Mosquitto + router + store) without
Docker, the messages it could never deliver, and leaf devices' activation keys."""

from __future__ import annotations

import base64
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outpost.agent.environment import default_device_id
from outpost.agent.status import utc
from outpost.cli.output import err, out, print_json
from outpost.errors import ManifestError, OutpostError
from outpost.hub.service import STORE_FILE, HubService, HubSettings, open_store
from outpost.manifest import parse_json
from outpost.stopping import stop_on_signals

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
    activation_port: Annotated[
        int | None,
        typer.Option(help="Leaf-device activation endpoint on 127.0.0.1 (POST /api/v1/activate; off when unset)."),
    ] = None,
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
            activation_port=activation_port,
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
    stop = stop_on_signals()
    err.print(f"outpost hub running on 127.0.0.1:{port} (state in {root}); Ctrl-C to stop")
    try:
        service.run(stop, source=read)
    finally:
        service.stop()


@app.command("leaf-key")
def leaf_key(
    device: Annotated[str, typer.Argument(help="The leaf device's id (as listed in outpost.leafDevices).")],
    key_root: Annotated[
        Path | None,
        typer.Option(
            "--key-root", envvar="OUTPOST_STATE_ROOT", help="Where device.key is [default: /var/lib/outpost]."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {deviceId, activationKey} as JSON.")] = False,
) -> None:
    """Print the activation key to provision into a leaf device (firmware/README.md).

    The leaf presents it once to the hub's activation endpoint (`outpost hub run --activation-port`)
    and receives its broker credential. The key is derived from this device's key: keep it secret.
    """
    from outpost.wire.credentials import DEFAULT_ROOT, device_key, leaf_activation_key

    if not device or any(c in device for c in "/+#: \t") or len(device) > 128:
        err.print(f"[red]error:[/] {escape(device)!r} cannot be a leaf device id (letters, digits, '_', '.', '-')")
        raise typer.Exit(2)
    activation_key = leaf_activation_key(device_key(key_root or DEFAULT_ROOT), device)
    if as_json:
        print_json({"deviceId": device, "activationKey": activation_key})
    else:
        out.print(activation_key, markup=False, highlight=False)


def _body(body: bytes) -> dict[str, str]:
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"bodyBase64": base64.b64encode(body).decode("ascii")}


@app.command("dead-letters")
def dead_letters(
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="Hub state directory [default: the hub's].")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the dead letters as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first.", min=1)] = 100,
    requeue: Annotated[
        list[int] | None, typer.Option("--requeue", help="Queue dead letter ID for its endpoint again (repeatable).")
    ] = None,
    requeue_all: Annotated[bool, typer.Option("--requeue-all", help="Queue every dead letter again.")] = False,
    purge: Annotated[list[int] | None, typer.Option("--purge", help="Delete dead letter ID (repeatable).")] = None,
    purge_all: Annotated[bool, typer.Option("--purge-all", help="Delete every dead letter.")] = False,
    ttl_secs: Annotated[
        float, typer.Option("--ttl-secs", help="How long a re-queued message may wait to be sent.", min=1)
    ] = 7200.0,
) -> None:
    """List the messages the hub could never deliver, with the reason; re-queue or purge them.

    A message becomes a dead letter when its endpoint refused it for good (too large, not
    authorised, malformed). Fix the cause, then `--requeue ID` (or `--requeue-all`): the hub
    sends it again within seconds, while running or at its next start.
    """
    root = state_dir or _default_state_dir()
    if not (root / STORE_FILE).exists():
        err.print(f"[red]error:[/] no hub store in {root}: pass the hub's --state-dir")
        raise typer.Exit(1)
    if (requeue or requeue_all) and (purge or purge_all):
        err.print("[red]error:[/] give either --requeue/--requeue-all or --purge/--purge-all, not both")
        raise typer.Exit(2)
    try:
        store = open_store(root)
    except OutpostError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    try:
        if requeue or requeue_all:
            done = store.requeue_dead_letters(None if requeue_all else requeue, time.time() + ttl_secs)
            missing = sorted(set(requeue or ()) - {d.seq for d in done})
            if json_out:
                print_json({"requeued": [d.seq for d in done], "notFound": missing})
            else:
                err.print(f"re-queued {len(done)} dead letter(s)" + (f"; no dead letter {missing}" if missing else ""))
            raise typer.Exit(1 if missing else 0)
        if purge or purge_all:
            count = store.purge_dead_letters(None if purge_all else purge)
            if json_out:
                print_json({"purged": count})
            else:
                err.print(f"purged {count} dead letter(s)")
            raise typer.Exit(1 if purge and count < len(set(purge)) else 0)
        letters, total = store.dead_letters(limit), store.dead_letter_count()
    except OutpostError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    finally:
        store.close()
    if json_out:
        print_json([
            {
                "id": d.seq, "endpoint": d.endpoint, "priority": d.priority, "messageId": d.message.id,
                "reason": d.reason, "deadAtUtc": utc(d.dead_at), "enqueuedAtUtc": utc(d.enqueued_at),
                "sourceModule": d.message.source_module, "output": d.message.output,
                "properties": dict(d.message.properties), **_body(d.message.body),
            }
            for d in letters
        ])  # fmt: skip
        return
    if not letters:
        err.print("no dead letters")
        return
    table = Table("ID", "ENDPOINT", "MESSAGE", "FROM", "DEAD AT (UTC)", "REASON", box=None)
    for d in letters:
        source = f"{d.message.source_module or d.message.source_device}/{d.message.output or ''}".rstrip("/")
        table.add_row(str(d.seq), d.endpoint, d.message.id, source, utc(d.dead_at) or "", d.reason)
    out.print(table)
    if total > len(letters):
        err.print(f"[dim]{total - len(letters)} older dead letter(s) not shown (--limit)[/]")
