"""``outpost agent apply|run``: put a deployment manifest on this device and keep it there."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from outpost.agent.environment import HubAddress
from outpost.agent.service import AgentService, AgentSettings, FileSource, FleetSettings, ManifestSource
from outpost.cli.output import err, print_json
from outpost.errors import InputError, ManifestError, ModuleRuntimeError
from outpost.manifest import parse_json
from outpost.stopping import stop_on_signals

app = typer.Typer(help="Run the edge agent: apply deployment manifests to this device.", no_args_is_help=True)


def default_state_dir() -> Path:
    if env := os.environ.get("OUTPOST_STATE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/outpost/agent")
    return Path.home() / ".local" / "state" / "outpost" / "agent"


StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        metavar="DIR",
        help="Agent state directory [default: $OUTPOST_STATE_DIR, else /var/lib/outpost/agent as root, "
        "~/.local/state/outpost/agent otherwise].",
    ),
]
RuntimeOpt = Annotated[str, typer.Option("--runtime", help="docker, process, or auto (Docker when an engine answers).")]
WorkdirOpt = Annotated[
    Path | None,
    typer.Option("--workdir", help="Base for relative outpost.process.workingDir paths [default: current directory]."),
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device-id", envvar="OUTPOST_DEVICE_ID", help="This device's id [default: hostname].")
]
HubOpt = Annotated[str, typer.Option("--hub", help="Edge hub broker address modules connect to (HOST:PORT).")]
NamespaceOpt = Annotated[
    str, typer.Option("--namespace", envvar="OUTPOST_NAMESPACE", help="Separates agents sharing one Docker engine.")
]


def open_agent(
    state_dir: Path | None,
    kind: str,
    namespace: str,
    workdir: Path | None = None,
    *,
    device_id: str | None = None,
    hub: str = "127.0.0.1:1883",
    **reconciler_kw: Any,
) -> AgentService:
    """The agent, composed (``agent.service``); exits with the reason when it cannot be."""
    try:
        address = HubAddress.parse(hub)
    except InputError as exc:
        err.print(f"[red]error:[/] --hub expects HOST:PORT, got {escape(hub)!r}")
        raise typer.Exit(2) from exc
    settings = AgentSettings(
        state_dir or default_state_dir(), kind, namespace, workdir, device_id=device_id, hub=address
    )
    try:
        return AgentService(settings, **reconciler_kw)
    except ModuleRuntimeError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        doc = parse_json(path.read_bytes())
    except ManifestError as exc:
        for p in exc.problems:
            typer.echo(f"{path}: {p.pointer or '/'}: {p.message}", err=True)
        raise typer.Exit(1) from exc
    if not isinstance(doc, dict):
        typer.echo(f"{path}: /: a manifest is a JSON object", err=True)
        raise typer.Exit(1)
    return doc


def _progress(kind: str, fields: dict[str, Any]) -> None:
    match kind:
        case "command":
            err.print(f"  [dim]…[/] {fields['action']} {escape(fields['module'])}")
        case "failed":
            err.print(f"  [red]✘[/] {escape(fields['module'])}: {escape(fields['error'])}")
        case "converged":
            err.print("  [green]✔[/] every module is where the deployment wants it; watching the health window")
        case "rollback":
            err.print(f"  [yellow]↺[/] rolling back to {escape(fields['to'])}: {escape(fields['reason'])}")


@app.command()
def apply(
    manifest: Annotated[
        Path, typer.Argument(metavar="MANIFEST", help="Deployment manifest (JSON).", exists=True, dir_okay=False)
    ],
    state_dir: StateOpt = None,
    runtime: RuntimeOpt = "auto",
    namespace: NamespaceOpt = "default",
    workdir: WorkdirOpt = None,
    device_id: DeviceOpt = None,
    hub: HubOpt = "127.0.0.1:1883",
    timeout: Annotated[float, typer.Option(help="Seconds to converge before giving up.")] = 300.0,
    health_window: Annotated[
        float | None, typer.Option(help="Seconds modules must stay up after converging [default: from manifest, 60].")
    ] = None,
    rollback: Annotated[bool, typer.Option(help="Roll back to the last known good deployment on failure.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Apply a manifest once and exit 0 when the device has converged.

    An invalid manifest is refused with every problem listed and nothing running is
    touched. If the deployment does not converge (missing image, crash loop in the health
    window), the last known good deployment is restored and the exit code is 1.
    """
    document = _read_manifest(manifest)
    agent = open_agent(
        state_dir, runtime, namespace, workdir, device_id=device_id, hub=hub,
        on_event=_progress if not json_out else _silent,
    )  # fmt: skip
    reconciler = agent.reconciler
    if not json_out:
        err.print(f"applying [bold]{escape(str(manifest))}[/] with the {agent.runtime.kind} runtime")
    try:
        with err.status("converging…", spinner="dots") if not json_out else _Null():
            result = reconciler.apply(
                document, name=manifest.stem, timeout=timeout, health_window=health_window, rollback=rollback
            )
    except ManifestError as exc:
        for p in exc.problems:
            typer.echo(f"{manifest}: {p.pointer or '/'}: {p.message}", err=True)
        err.print("[red]manifest refused[/]; nothing running was changed. Fix the places above and apply again.")
        raise typer.Exit(1) from exc
    if json_out:
        print_json({**result.summary(), "failures": result.failures})
    elif result.converged:
        err.print(f"[green]converged[/]: {escape(result.deployment_id)}  (see `outpost list`)")
    else:
        err.print(f"[red]failed[/]: {escape(result.description)}")
        err.print("see `outpost list` for module states and `outpost logs MODULE` for why a module exited")
    raise typer.Exit(0 if result.converged else 1)


def _silent(kind: str, fields: dict[str, Any]) -> None:
    """Progress goes nowhere with --json: stdout carries only the result."""


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


@app.command()
def run(
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Manifest file to apply and watch for changes.", dir_okay=False)
    ] = None,
    state_dir: StateOpt = None,
    runtime: RuntimeOpt = "auto",
    namespace: NamespaceOpt = "default",
    workdir: WorkdirOpt = None,
    device_id: DeviceOpt = None,
    hub: HubOpt = "127.0.0.1:1883",
    interval: Annotated[float, typer.Option(help="Seconds between reconcile rounds when nothing happens.")] = 5.0,
    metrics_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Prometheus metrics port on 127.0.0.1 (0: off).")
    ] = 9601,
    fleet: Annotated[
        str | None,
        typer.Option(
            "--fleet", envvar="OUTPOST_FLEET_URL", help="Take deployments from this fleet (and report to it)."
        ),
    ] = None,
    activation_key: Annotated[
        str | None,
        typer.Option(
            "--activation-key", envvar="OUTPOST_ACTIVATION_KEY", help="One-time key from `outpost device add`."
        ),
    ] = None,
    credential_file: Annotated[
        Path | None,
        typer.Option("--credential-file", help="The device credential (written here on activation when missing)."),
    ] = None,
    fleet_ca: Annotated[
        Path | None, typer.Option("--fleet-ca", help="CA certificate to trust for an https fleet.", dir_okay=False)
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="JSON file with any of: fleet, deviceId, activationKey, credentialFile, fleetCa.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Run the reconcile loop until stopped (SIGINT/SIGTERM).

    Without --manifest, or when the file is unreadable, the agent keeps the deployment
    stored in its state dir running (offline first: a rebooted device with no network
    comes back by itself). A changed manifest is applied with rollback; an invalid one is
    logged and ignored.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if config is not None:
        fleet, device_id, activation_key, credential_file, fleet_ca = _fleet_config(
            config, fleet, device_id, activation_key, credential_file, fleet_ca
        )
    if manifest is not None and fleet is not None:
        err.print("[red]error:[/] give --manifest or --fleet, not both")
        raise typer.Exit(2)
    if fleet is not None and not device_id:
        err.print("[red]error:[/] --fleet needs --device-id (the id the device was added with)")
        raise typer.Exit(2)
    agent = open_agent(state_dir, runtime, namespace, workdir, device_id=device_id, hub=hub)
    if metrics_port:
        try:
            agent.serve_metrics(metrics_port)
        except OSError as exc:
            err.print(
                f"[red]error:[/] metrics port 127.0.0.1:{metrics_port} is taken ({exc.strerror}): is another agent "
                "running? Stop it, or pass --metrics-port (0 turns metrics off)"
            )
            raise typer.Exit(1) from exc
    stop = stop_on_signals()
    source: ManifestSource | None = FileSource(manifest) if manifest else None
    if fleet is not None:
        link = agent.fleet_link(FleetSettings(fleet, activation_key, credential_file, fleet_ca))
        link.start(stop)
        source = link
        err.print(f"following the fleet at {escape(fleet)} as device {escape(str(device_id))}")
    err.print(f"outpost agent running ({agent.runtime.kind} runtime, state in {agent.state.path}); Ctrl-C to stop")
    agent.run(stop, source, interval=interval)


def _fleet_config(
    path: Path,
    fleet: str | None,
    device_id: str | None,
    activation_key: str | None,
    credential_file: Path | None,
    fleet_ca: Path | None,
) -> tuple[str | None, str | None, str | None, Path | None, Path | None]:
    """Settings from --config; options given on the command line win."""
    try:
        data = parse_json(path.read_bytes())
    except ManifestError as exc:
        for p in exc.problems:
            typer.echo(f"{path}: {p.pointer or '/'}: {p.message}", err=True)
        raise typer.Exit(2) from exc
    if not isinstance(data, dict):
        typer.echo(f"{path}: /: expected a JSON object", err=True)
        raise typer.Exit(2)
    known = {"fleet", "deviceId", "activationKey", "credentialFile", "fleetCa"}
    for key in sorted(set(data) - known):
        typer.echo(f"{path}: /{key}: unknown setting; expected one of {', '.join(sorted(known))}", err=True)
        raise typer.Exit(2)

    def text(key: str) -> str | None:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            typer.echo(f"{path}: /{key}: expected a string", err=True)
            raise typer.Exit(2)
        return value

    def file(key: str) -> Path | None:
        value = text(key)
        return Path(value) if value else None

    return (
        fleet or text("fleet"),
        device_id or text("deviceId"),
        activation_key or text("activationKey"),
        credential_file or file("credentialFile"),
        fleet_ca or file("fleetCa"),
    )
