"""``outpost device add|list|show|tag|remove|deactivate|reactivate|twin``: the fleet's device registry.

Thin calls to the fleet API (see :mod:`outpost.cli.fleet` for --fleet/--token). The local
module commands (``outpost list|logs|restart|check``) are in :mod:`outpost.cli.device`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape

from outpost.cli.fleet import CaOpt, FleetOpt, JsonOpt, TokenOpt, connect
from outpost.cli.output import err, out, parse_assignments, print_json, print_list
from outpost.errors import InputError
from outpost.files import write_atomic
from outpost.trust.keys import read_private
from outpost.trust.overrides import sign_override
from outpost.wire.patch import merge_patch

app = typer.Typer(help="Provision devices in the fleet, tag them, and read or set their twins.", no_args_is_help=True)

DeviceArg = Annotated[str, typer.Argument(help="The device id.")]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="Tag KEY=VALUE (dots nest; JSON values allowed).")]
URL = "http://127.0.0.1:9700"


def _tags(items: list[str] | None, option: str = "--tag") -> dict[str, Any]:
    try:
        return parse_assignments(items, option)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _flat(tags: Any, prefix: str = "") -> str:
    if not isinstance(tags, dict):
        return f"{prefix}={json.dumps(tags)}" if prefix else json.dumps(tags)
    parts = [_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}={v}" for k, v in sorted(tags.items())]
    return " ".join(parts)


def _agent_state(twin: dict[str, Any]) -> str:
    agent = twin.get("modules", {}).get("$edgeAgent", {})
    status = agent.get("properties", {}).get("reported", {}).get("lastDesiredStatus", {})
    code = status.get("code")
    return "-" if code is None else f"{code} {status.get('description', '')}".strip()


@app.command()
def add(
    device_id: DeviceArg,
    tag: Tags = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Write the activation key to this file (0600) instead of stdout.")
    ] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Provision a device; its one-time activation key goes to stdout (or --key-file).

    The device trades the key for its own credential on first contact
    (`outpost agent run --fleet URL --device-id ID --activation-key KEY`).
    """
    tags = _tags(tag)
    with connect(fleet, token, ca) as client:
        result = client.add_device(device_id, tags)
    key = result["activationKey"]
    if key_file is not None:
        write_atomic(key_file, key + "\n", 0o600)
        result = {**result, "activationKey": None, "activationKeyFile": str(key_file)}
    if json_out:
        print_json(result)
        return
    if key_file is None:
        typer.echo(key)
    where = f"in {key_file}" if key_file else "above"
    err.print(f"added device [bold]{escape(device_id)}[/] ({escape(_flat(tags)) or 'no tags'}); its activation key "
              f"is {where}: it works once")  # fmt: skip


@app.command("list")
def list_devices(
    target: Annotated[
        str | None, typer.Option("--target", help="Only devices this target condition selects, e.g. tags.site='a'.")
    ] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the fleet's devices (a device group when --target is given)."""
    with connect(fleet, token, ca) as client:
        devices = client.devices(target)
    print_list(
        devices,
        json_out=json_out,
        title=f"{len(devices)} device(s)" + (f" where {target}" if target else ""),
        columns=("device", "status", "activated", "tags", "last seen"),
        row=lambda d: (
            escape(d["deviceId"]),
            d["status"],
            "yes" if d["activated"] else "no",
            escape(_flat(d["tags"])),
            d.get("lastActivityTime") or "-",
        ),
    )


@app.command()
def show(device_id: DeviceArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None,
         json_out: JsonOpt = False) -> None:  # fmt: skip
    """Show a device's twin: tags, properties and every module twin, and what it should run."""
    with connect(fleet, token, ca) as client:
        twin = client.device(device_id)
        assignment = client.assignment(device_id)
    if json_out:
        print_json({**twin, "assignment": assignment})
        return
    out.print(
        f"[bold]{escape(twin['deviceId'])}[/] {twin['status']}, activated: {'yes' if twin['activated'] else 'no'}"
    )
    out.print(f"tags: {escape(_flat(twin['tags'])) or '-'}")
    out.print(f"deployments: {', '.join(assignment['deployments']) or 'none'} (etag {assignment['etag']})")
    out.print(f"agent: {escape(_agent_state(twin))}")
    for name, module in twin.get("modules", {}).items():
        props = module["properties"]
        out.print(f"module {escape(name)}: desired v{props['desired'].get('$version')}, "
                  f"reported v{props['reported'].get('$version')}")  # fmt: skip


@app.command()
def tag(
    device_id: DeviceArg,
    tag: Tags = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Tag to remove (dots nest).")] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Set (--tag) or remove (--remove) tags; the device joins and leaves groups accordingly."""
    patch = _tags(tag)
    for name in remove or []:
        node = patch
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = None
    if not patch:
        err.print("[red]error:[/] nothing to change: give --tag KEY=VALUE or --remove KEY")
        raise typer.Exit(2)
    with connect(fleet, token, ca) as client:
        twin = client.patch_tags(device_id, patch)
    if json_out:
        print_json(twin)
    else:
        err.print(f"{escape(device_id)}: tags now {escape(_flat(twin['tags'])) or '-'}")


@app.command()
def remove(device_id: DeviceArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Remove a device and its twins from the fleet (its credential stops working)."""
    with connect(fleet, token, ca) as client:
        client.remove_device(device_id)
    err.print(f"removed {escape(device_id)}")


@app.command()
def deactivate(device_id: DeviceArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Refuse the device from now on (every call it makes gets 403) until it is re-activated."""
    with connect(fleet, token, ca) as client:
        client.set_status(device_id, "disabled")
    err.print(f"deactivated {escape(device_id)}; `outpost device reactivate {escape(device_id)}` undoes it")


@app.command()
def reactivate(device_id: DeviceArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Accept a deactivated device again (with the credential it had)."""
    with connect(fleet, token, ca) as client:
        client.set_status(device_id, "enabled")
    err.print(f"re-activated {escape(device_id)}")


@app.command()
def twin(
    device_id: DeviceArg,
    module: Annotated[str | None, typer.Option("--module", help="A module twin instead of the device twin.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Desired property KEY=VALUE for --module (null removes).")
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            help="Operator private key: sign the result for this device and module "
            "(devices with a trust root need it).",
        ),
    ] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
) -> None:
    """Print a twin as JSON, or set a module's desired properties (reaches the module without a redeploy).

    With --sign-key the operator signs the module's resulting desired properties for this device
    at their next version; a device with a trust root applies only signed ones.
    """
    patch = _tags(set_, "--set")
    if patch and module is None:
        err.print("[red]error:[/] --set needs --module M (device-level desired properties come from deployments)")
        raise typer.Exit(2)
    if sign_key is not None and not (patch and module is not None):
        err.print("[red]error:[/] --sign-key signs a change: give --module M and --set KEY=VALUE")
        raise typer.Exit(2)
    with connect(fleet, token, ca) as client:
        if patch and module is not None:
            if sign_key is not None:
                patch = _signed(client.device(device_id), device_id, module, patch, sign_key)
            print_json(client.set_desired(device_id, module, patch))
            return
        document = client.device(device_id)
    if module is None:
        print_json({k: v for k, v in document.items() if k != "modules"})
        return
    modules = document.get("modules", {})
    if module not in modules:
        err.print(f"[red]error:[/] {escape(device_id)} has no twin for module {escape(module)} yet "
                  f"(known: {', '.join(modules) or 'none'})")  # fmt: skip
        raise typer.Exit(1)
    print_json(modules[module])


def _signed(twin: dict[str, Any], device_id: str, module: str, patch: dict[str, Any], key: Path) -> dict[str, Any]:
    """``patch`` with the version it makes and the operator's signature over the resulting document
    (what the fleet will store, computed from the twin read just now; the fleet refuses the write
    if the twin changed meanwhile)."""
    current = twin.get("modules", {}).get(module, {}).get("properties", {}).get("desired", {})
    version = int(current.get("$version", 0)) + 1
    desired = merge_patch({k: v for k, v in current.items() if k not in ("$version", "$signatures")}, patch)
    try:
        signature = sign_override(device_id, module, version, desired, read_private(key))
    except InputError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}; nothing was set")
        raise typer.Exit(1) from exc
    return {**patch, "$version": version, "$signatures": [signature.to_json()]}


@app.command("signing-key")
def signing_key(
    device_id: DeviceArg,
    public_key: Annotated[
        Path | None,
        typer.Argument(
            help="The device's public key (`outpost agent trust device-key` on it); omit to show it.",
            dir_okay=False,
        ),
    ] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register the key a device signs its upstream exports with (or show the registered one).

    `outpost bundle import-upstream --fleet` delivers an export's reported properties only when
    the export is signed by the key registered here for the device it names.
    """  # fmt: skip
    try:
        pem = public_key.read_text(encoding="utf-8") if public_key is not None else None
    except (OSError, UnicodeError) as exc:
        err.print(f"[red]error:[/] {escape(str(public_key))}: cannot read the key ({escape(str(exc))})")
        raise typer.Exit(1) from exc
    with connect(fleet, token, ca) as client:
        path = f"/api/v1/devices/{quote(device_id, safe='')}/signing-key"
        record = client.json("GET", path) if pem is None else client.json("PUT", path, json={"publicKey": pem})
    if json_out:
        print_json(record)
        return
    err.print(f"{escape(device_id)}: signing key [bold]{escape(record['keyId'])}[/] (added {record['added']} "
              f"by {escape(record['addedBy'])})")  # fmt: skip
