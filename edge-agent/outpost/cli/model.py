"""``outpost model push|list|show|pull``: the fleet's model registry (immutable versions with sha256)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.progress import Progress

from outpost.cli.fleet import CaOpt, FleetOpt, JsonOpt, TokenOpt, connect
from outpost.cli.output import err, print_json, print_list

app = typer.Typer(help="Register model versions in the fleet and look them up.", no_args_is_help=True)
URL = "http://127.0.0.1:9700"


@app.command()
def push(
    file: Annotated[Path, typer.Argument(help="The model file (e.g. motor-v2.tflite).", exists=True, dir_okay=False)],
    name: Annotated[str, typer.Option("--name", help="Model name, e.g. motor.")],
    version: Annotated[str, typer.Option("--version", help="Version, e.g. 2 (immutable once pushed).")],
    metadata: Annotated[
        Path | None,
        typer.Option("--metadata", help="JSON file: inputs, quantisation, evaluation report.", exists=True),
    ] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Store a model version with its sha256, size and metadata; a version, once pushed, never changes.

    The file is streamed (the fleet checks its sha256 and takes up to its --max-model, 64 MiB by default).
    """
    meta: Any = {}
    if metadata is not None:
        try:
            meta = json.loads(metadata.read_text())
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/] {escape(str(metadata))}: not a JSON file ({escape(str(exc))})")
            raise typer.Exit(2) from exc
        if not isinstance(meta, dict):
            err.print(f"[red]error:[/] {escape(str(metadata))}: expected a JSON object")
            raise typer.Exit(2)
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    size = file.stat().st_size
    with connect(fleet, token, ca) as client, Progress(transient=True, console=err, disable=json_out) as bar:
        task = bar.add_task(f"uploading {name}@{version}", total=size)
        record = client.upload_model(
            name, version, file, sha256=digest.hexdigest(), metadata=meta, progress=lambda n: bar.advance(task, n)
        )
    if json_out:
        print_json(record)
        return
    err.print(
        f"pushed model [bold]{escape(name)}@{escape(version)}[/] ({record['size']} bytes, "
        f"sha256 {record['sha256'][:12]}); roll it out with `outpost rollout start NAME --model {name}@{version}`"
    )


@app.command("list")
def list_models(fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None, json_out: JsonOpt = False) -> None:
    """List registered model versions."""
    with connect(fleet, token, ca) as client:
        models = client.json("GET", "/api/v1/models")
    print_list(
        models,
        json_out=json_out,
        title=f"{len(models)} model version(s)",
        columns=("model", "size", "sha256", "created"),
        row=lambda m: (escape(f"{m['name']}@{m['version']}"), str(m["size"]), m["sha256"][:16], m["created"]),
    )


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION, e.g. motor@2.")],
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Print a model version's sha256, size and metadata (JSON)."""
    name, sep, version = ref.partition("@")
    if not sep:
        err.print(f"[red]error:[/] expected NAME@VERSION, got {escape(ref)!r}")
        raise typer.Exit(2)
    with connect(fleet, token, ca) as client:
        print_json(client.json("GET", f"/api/v1/models/{name}/{version}"))


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION, e.g. motor@2.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the model file.", dir_okay=False)],
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Download a model version into a file, verified against its sha256 (the record goes to stdout with --json)."""
    name, sep, version = ref.partition("@")
    if not sep:
        err.print(f"[red]error:[/] expected NAME@VERSION, got {escape(ref)!r}")
        raise typer.Exit(2)
    partial = output.with_name(f".{output.name}.part")
    with connect(fleet, token, ca) as client:
        record = client.json("GET", f"/api/v1/models/{quote(name, safe='')}/{quote(version, safe='')}")
        with partial.open("wb") as handle, Progress(transient=True, console=err, disable=json_out) as bar:
            task = bar.add_task(f"downloading {name}@{version}", total=record["size"])
            client.download_model(name, version, handle, lambda n: bar.advance(task, n))
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    if digest != record["sha256"]:
        partial.unlink(missing_ok=True)
        err.print(f"[red]error:[/] the download has sha256 {digest}, the registry says {record['sha256']}; try again")
        raise typer.Exit(1)
    partial.replace(output)
    if json_out:
        print_json(record)
        return
    err.print(f"wrote {escape(str(output))} ({record['size']} bytes, sha256 {record['sha256'][:12]})")
