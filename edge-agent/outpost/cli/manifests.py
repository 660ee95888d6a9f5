"""``outpost manifest ...``: validate manifests and show what one device would run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outpost.cli.output import err, parse_assignments, print_json
from outpost.errors import ManifestError, Problem
from outpost.manifest import Deployment, check_document, effective_manifest, parse_deployment, parse_json
from outpost.manifest.models import DEFAULT_ROUTE_PRIORITY

app = typer.Typer(
    help="Validate deployment manifests and compute what a device would run.",
    no_args_is_help=True,
)

Files = Annotated[list[Path], typer.Argument(metavar="FILE", help="Manifest or deployment JSON files.", dir_okay=False)]
Json = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON document instead.")]


def _problem_dicts(problems: list[Problem]) -> list[dict[str, str]]:
    return [{"pointer": p.pointer, "message": p.message} for p in problems]


_NOT_A_DOCUMENT = ("unreadable", "not JSON")


def _unreadable(exc: OSError) -> str:
    return f"cannot read the file: {exc.strerror or exc}"


def _check_file(path: Path) -> dict[str, Any]:
    """One file's report; a missing or unreadable file, or one that is not JSON, is reported like the others."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = Problem("", _unreadable(exc))
        return {"file": str(path), "kind": "unreadable", "valid": False, "problems": [problem], "warnings": []}
    try:
        doc = parse_json(data)
    except ManifestError as exc:
        return {"file": str(path), "kind": "not JSON", "valid": False, "problems": exc.problems, "warnings": []}
    kind, report = check_document(doc)
    return {
        "file": str(path),
        "kind": kind,
        "valid": report.ok,
        "problems": report.problems,
        "warnings": report.warnings,
    }


@app.command()
def validate(
    files: Files,
    json_out: Json = False,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")] = False,
) -> None:
    """Check manifests and deployments; print FILE: POINTER: message for every problem.

    Exits 0 when every file is valid, 1 otherwise. Warnings (fields Azure would silently
    ignore, unknown Docker create options, routes into undeclared modules) do not fail a
    file unless --strict is given.
    """
    results = [_check_file(path) for path in files]
    failed = 0
    for result in results:
        if strict and result["warnings"]:
            result["valid"] = False
        failed += not result["valid"]
    if json_out:
        print_json(
            [
                {**r, "problems": _problem_dicts(r["problems"]), "warnings": _problem_dicts(r["warnings"])}
                for r in results
            ]
        )
    else:
        for r in results:
            for p in r["problems"]:
                typer.echo(f"{r['file']}: {p.pointer or '/'}: {p.message}")
            for p in r["warnings"]:
                typer.echo(f"{r['file']}: {p.pointer or '/'}: warning: {p.message}")
        for r in results:
            mark = "[green]valid[/]" if r["valid"] else "[red]invalid[/]"
            what = f"{mark}: {r['kind']}" if r["kind"] in _NOT_A_DOCUMENT else f"{mark} {r['kind']}"
            counts = f"{len(r['problems'])} problem(s), {len(r['warnings'])} warning(s)"
            err.print(f"{escape(r['file'])}: {what} ({counts})")
        if failed:
            err.print(f"{failed} of {len(results)} file(s) invalid: fix the places named above and run again.")
    raise typer.Exit(1 if failed else 0)


def _load(path: Path, order: int) -> Deployment:
    """One deployment, or exit 1 with every problem prefixed by the file's name."""
    try:
        doc = parse_json(path.read_bytes())
        return parse_deployment(doc, default_id=path.stem, order=order)
    except OSError as exc:
        typer.echo(f"{path}: /: {_unreadable(exc)}", err=True)
        err.print(f"[red]no effective manifest[/]: {escape(str(path))} cannot be read; check the path and run again.")
        raise typer.Exit(1) from exc
    except ManifestError as exc:
        for p in exc.problems:
            typer.echo(f"{path}: {p.pointer or '/'}: {p.message}", err=True)
        err.print(f"[red]no effective manifest[/]: fix the places in {escape(str(path))} named above and run again.")
        raise typer.Exit(1) from exc


@app.command()
def show(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Base manifest or deployment.", exists=True, dir_okay=False)
    ],
    tag: Annotated[
        list[str] | None, typer.Option("--tag", metavar="KEY=VALUE", help="Device twin tag KEY=VALUE (dots nest).")
    ] = None,
    reported: Annotated[
        list[str] | None,
        typer.Option("--reported", metavar="KEY=VALUE", help="Reported property KEY=VALUE (dots nest)."),
    ] = None,
    layer: Annotated[
        list[Path] | None,
        typer.Option(
            "--layer",
            metavar="FILE",
            help="Layered (or further base) deployment to consider.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    device_id: Annotated[str, typer.Option("--device-id", help="The device's id.")] = "device",
    json_out: Json = False,
) -> None:
    """Print the effective manifest for a device with these tags and reported properties.

    Deployments whose targetCondition does not match the device are left out; of the
    matching base deployments the highest priority wins, and matching layered deployments
    are applied on top in priority order (Azure's rules). The manifest goes to stdout,
    a summary of where each part came from to stderr.
    """
    twin = {
        "deviceId": device_id,
        "tags": parse_assignments(tag, "--tag"),
        "properties": {"reported": parse_assignments(reported, "--reported")},
    }
    paths = [file, *(layer or [])]
    deployments = [_load(path, order) for order, path in enumerate(paths)]
    try:
        effective = effective_manifest(deployments, twin)
    except ManifestError as exc:
        for p in exc.problems:
            typer.echo(f"{p.pointer or '/'}: {p.message}", err=True)
        err.print(
            "[red]no effective manifest[/]: fix the problems above (or the --tag/--reported values) and run again."
        )
        raise typer.Exit(1) from exc
    if json_out:
        print_json(
            {
                "device": twin,
                "base": effective.base,
                "layers": effective.layers,
                "sources": effective.sources,
                "manifest": effective.document,
            }
        )
        return
    print_json(effective.document)
    table = Table(title=f"effective manifest for {device_id}", title_justify="left")
    for column in ("module", "image", "status", "restart", "order", "from"):
        table.add_column(column)
    manifest = effective.manifest
    for name, module in manifest.edge_agent.modules.items():
        table.add_row(
            name,
            module.settings.image,
            module.status.value,
            module.restart_policy.value,
            str(module.startup_order),
            effective.sources.get(f"/$edgeAgent/modules/{name}", effective.base),
        )
    err.print(table)
    for name, spec in manifest.edge_hub.route_specs().items():
        source = effective.sources.get(f"/$edgeHub/routes/{name}", effective.base)
        priority = "default" if spec.priority == DEFAULT_ROUTE_PRIORITY else spec.priority
        err.print(f"route [bold]{name}[/] (priority {priority}, from {source}): {escape(spec.route)}")
    err.print(f"base: {effective.base}; layers: {', '.join(effective.layers) or 'none'}")
