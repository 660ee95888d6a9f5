"""``outpost deploy push|list|show|retarget|delete|history|status``: deployments to device groups.

``push`` takes the file ``az iot edge deployment create --content`` takes (``modulesContent``
or ``content.modulesContent``), or Azure's whole configuration document, unchanged. The
fleet validates it; an invalid one is refused (non-zero exit, problems with JSON pointers)
and nothing is stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outpost.cli.fleet import CaOpt, FleetOpt, JsonOpt, TokenOpt, connect
from outpost.cli.output import err, out, parse_assignments, print_json
from outpost.errors import InputError
from outpost.trust.keys import read_private
from outpost.trust.parts import sign_content

app = typer.Typer(help="Push deployments to device groups and watch them converge.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The deployment's name (id).")]
URL = "http://127.0.0.1:9700"


def _labels(items: list[str] | None) -> dict[str, Any]:
    try:
        return parse_assignments(items, "--label", typed=False, nested=False)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def push(
    file: Annotated[Path, typer.Argument(help="Deployment file (JSON).", exists=True, dir_okay=False)],
    name: Annotated[str | None, typer.Option("--name", help="Deployment name (default: the file's id).")] = None,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Target condition, e.g. \"tags.site='plant-a'\" (default: the file's)."),
    ] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="Higher wins (default: the file's, or 0).")] = None,
    layered: Annotated[
        bool, typer.Option("--layered", help="A layered deployment, applied on top of the base.")
    ] = False,
    label: Annotated[list[str] | None, typer.Option("--label", help="Label KEY=VALUE (repeatable).")] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign-key", help="Operator private key: sign the content (devices with a trust root need it)."),
    ] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Push a deployment to the devices its target condition selects.

    With --sign-key the operator signs the deployment's content; the fleet hands devices the
    signed deployments their manifest is composed from, and a device with a trust root runs
    it only if every part verifies and they compose to exactly that manifest.
    """
    try:
        document = json.loads(file.read_bytes())
    except ValueError as exc:
        err.print(f"[red]error:[/] {file}: not JSON ({exc}); nothing was pushed")
        raise typer.Exit(1) from exc
    signatures: list[dict[str, str]] = []
    if sign_key is not None:
        content = document.get("modulesContent") if isinstance(document, dict) else None
        if content is None and isinstance(document, dict) and isinstance(document.get("content"), dict):
            content = document["content"].get("modulesContent")
        if not isinstance(content, dict):
            err.print(f"[red]error:[/] {file}: no modulesContent to sign; nothing was pushed")
            raise typer.Exit(1)
        try:
            signatures.append(sign_content(content, read_private(sign_key)).to_json())
        except InputError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}; nothing was pushed")
            raise typer.Exit(1) from exc
    body = {
        "document": document,
        "name": name,
        "targetCondition": target,
        "priority": priority,
        "layered": layered,
        "labels": _labels(label),
        **({"signatures": signatures} if signatures else {}),
    }
    with connect(fleet, token, ca) as client:
        record = client.push(body)
    if json_out:
        print_json({k: v for k, v in record.items() if k != "content"})
        return
    kind = (", layered" if record["layered"] else "") + (", signed" if record.get("signatures") else "")
    err.print(f"pushed [bold]{escape(record['id'])}[/] (priority {record['priority']}{kind}) "
              f"to {escape(record['targetCondition'])}; "
              f"watch it with `outpost deploy status {escape(record['id'])}`")  # fmt: skip


@app.command("list")
def list_deployments(
    fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None, json_out: JsonOpt = False
) -> None:
    """List deployments (newest last)."""
    with connect(fleet, token, ca) as client:
        deployments = client.deployments()
    if json_out:
        print_json(deployments)
        return
    table = Table(title=f"{len(deployments)} deployment(s)", title_justify="left")
    for column in ("name", "priority", "kind", "target", "labels", "created"):
        table.add_column(column)
    for d in deployments:
        labels = " ".join(f"{k}={v}" for k, v in sorted(d["labels"].items()))
        kind = "layered" if d["layered"] else "base"
        table.add_row(escape(d["id"]), str(d["priority"]), kind, escape(d["targetCondition"]), escape(labels),
                      d["createdTimeUtc"])  # fmt: skip
    out.print(table)


@app.command()
def show(name: NameArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Print a deployment as Azure's configuration document (JSON)."""
    with connect(fleet, token, ca) as client:
        print_json(client.deployment(name))


@app.command()
def retarget(
    name: NameArg,
    target: Annotated[str | None, typer.Option("--target", help="New target condition.")] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="New priority.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Replace labels with these KEY=VALUE.")] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a deployment's target, priority or labels (its content cannot change)."""
    changes: dict[str, Any] = {}
    if target is not None:
        changes["targetCondition"] = target
    if priority is not None:
        changes["priority"] = priority
    if label:
        changes["labels"] = _labels(label)
    if not changes:
        err.print("[red]error:[/] nothing to change: give --target, --priority or --label")
        raise typer.Exit(2)
    with connect(fleet, token, ca) as client:
        record = client.update_deployment(name, changes)
    if json_out:
        print_json(record)
    else:
        err.print(f"{escape(name)}: target {escape(record['targetCondition'])}, priority {record['priority']}")


@app.command()
def delete(name: NameArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Delete a deployment; its devices fall back to what else targets them."""
    with connect(fleet, token, ca) as client:
        client.delete_deployment(name)
    err.print(f"deleted {escape(name)}")


@app.command()
def history(
    name: Annotated[str | None, typer.Argument(help="Only this deployment.")] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Who pushed, changed or deleted what, and when."""
    with connect(fleet, token, ca) as client:
        entries = client.history(name)
    if json_out:
        print_json(entries)
        return
    table = Table(title="deployment history", title_justify="left")
    for column in ("when", "who", "what", "deployment", "detail"):
        table.add_column(column)
    for e in entries:
        detail = e["detail"]
        text = detail.get("targetCondition", "") if e["action"] == "push" else json.dumps(detail)
        table.add_row(e["at"], escape(e["actor"]), e["action"], escape(e["deploymentId"]), escape(str(text)))
    out.print(table)


@app.command()
def status(name: NameArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None,
           json_out: JsonOpt = False) -> None:  # fmt: skip
    """Targeted, applied, successful and failed counts, custom metrics, and why devices fail."""
    with connect(fleet, token, ca) as client:
        result = client.status(name)
    if json_out:
        print_json(result)
        return
    m = result["systemMetrics"]
    out.print(f"[bold]{escape(name)}[/]: targeted {m['targetedCount']}, applied {m['appliedCount']}, "
              f"successful {m['reportedSuccessfulCount']}, failed {m['reportedFailedCount']}, "
              f"pending {len(result['pending'])}")  # fmt: skip
    for metric, value in result["customMetrics"].items():
        shown = value.get("count", value.get("error"))
        out.print(f"  {escape(metric)}: {shown}")
    for failing in result["failing"]:
        out.print(f"  [red]failed[/] {escape(failing['deviceId'])}: {escape(str(failing['reason']))}")
