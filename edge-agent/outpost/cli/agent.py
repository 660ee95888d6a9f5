"""``outpost agent apply|run``: put a deployment manifest on this device and keep it there."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from outpost.agent.adapters import make_runtime
from outpost.agent.environment import HubAddress, ModuleEnvironment, default_device_id
from outpost.agent.metrics import AgentMetrics
from outpost.agent.reconciler import Reconciler
from outpost.agent.runtime import ContainerRuntime
from outpost.agent.state import StateDir
from outpost.cli.output import err, print_json
from outpost.errors import ManifestError, ModuleRuntimeError
from outpost.manifest import parse_json

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


def open_runtime(
    state: StateDir,
    kind: str,
    namespace: str,
    workdir: Path | None = None,
    *,
    device_id: str | None = None,
    hub: str = "127.0.0.1:1883",
) -> ContainerRuntime:
    """Build the runtime and remember the choices so list/logs/restart use the same ones."""
    try:
        runtime = make_runtime(
            kind, state_dir=state.path, namespace=namespace, workdir=(workdir or Path.cwd()).resolve()
        )
    except ModuleRuntimeError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    base = (workdir or Path.cwd()).resolve()
    host, _, port = hub.rpartition(":")
    if not host or not port.isdigit():
        err.print(f"[red]error:[/] --hub expects HOST:PORT, got {escape(hub)!r}")
        raise typer.Exit(2)
    state.write(
        "runtime.json",
        {
            "kind": runtime.kind,
            "namespace": namespace,
            "workdir": str(base),
            "deviceId": device_id or default_device_id(),
            "hub": hub,
        },
    )
    return runtime


def make_reconciler(state: StateDir, runtime: ContainerRuntime, **kw: Any) -> Reconciler:
    """A reconciler whose modules get this device's identity and hub address (from runtime.json)."""
    info = state.read("runtime.json") or {}
    host, _, port = str(info.get("hub", "127.0.0.1:1883")).rpartition(":")
    env = ModuleEnvironment(
        str(info.get("deviceId") or default_device_id()),
        HubAddress(host, int(port)),
        key_root=state.path.parent,
        agent_state=state.path.resolve(),
    )
    return Reconciler(runtime, state, module_env=env, **kw)


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
    state = StateDir(state_dir or default_state_dir())
    rt = open_runtime(state, runtime, namespace, workdir=workdir, device_id=device_id, hub=hub)
    reconciler = make_reconciler(state, rt, on_event=_progress if not json_out else _silent)
    if not json_out:
        err.print(f"applying [bold]{escape(str(manifest))}[/] with the {rt.kind} runtime")
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
        print_json(
            {
                "converged": result.converged,
                "code": int(result.code),
                "description": result.description,
                "deployment": result.deployment_id,
                "rolledBackTo": result.rolled_back_to or None,
                "failures": result.failures,
            }
        )
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
) -> None:
    """Run the reconcile loop until stopped (SIGINT/SIGTERM).

    Without --manifest, or when the file is unreadable, the agent keeps the deployment
    stored in its state dir running (offline first: a rebooted device with no network
    comes back by itself). A changed manifest is applied with rollback; an invalid one is
    logged and ignored.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    state = StateDir(state_dir or default_state_dir())
    rt = open_runtime(state, runtime, namespace, workdir=workdir, device_id=device_id, hub=hub)
    metrics = AgentMetrics()
    if metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
        except OSError as exc:
            err.print(
                f"[red]error:[/] metrics port 127.0.0.1:{metrics_port} is taken ({exc.strerror}): is another agent "
                "running? Stop it, or pass --metrics-port (0 turns metrics off)"
            )
            raise typer.Exit(1) from exc
    reconciler = make_reconciler(state, rt, metrics=metrics)
    stop = threading.Event()

    def source() -> dict[str, Any] | None:
        if manifest is None:
            return None
        try:
            doc = parse_json(manifest.read_bytes())
        except (OSError, ManifestError) as exc:
            logging.getLogger("outpost.agent").warning("cannot read %s: %s", manifest, exc)
            return None
        return doc if isinstance(doc, dict) else None

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    err.print(f"outpost agent running ({rt.kind} runtime, state in {state.path}); Ctrl-C to stop")
    reconciler.run(stop, source=source, name=manifest.stem if manifest else "deployment", interval=interval)
