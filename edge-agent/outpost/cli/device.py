"""``outpost list|logs|restart|check``: look at and poke the modules of the local agent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outpost.agent.diagnostics import Level, gather
from outpost.agent.failures import Failures, restart_module
from outpost.agent.runtime import ContainerRuntime
from outpost.agent.service import attach, compose, host_probes, runtime_of
from outpost.agent.state import StateDir
from outpost.agent.status import DeploymentStatus, StatusCode, reported
from outpost.cli.agent import StateOpt, default_state_dir
from outpost.cli.output import err, out, print_json
from outpost.errors import ManifestError, ModuleRuntimeError

_COLOURS = {"running": "green", "backoff": "yellow", "unhealthy": "yellow", "failed": "red", "stopped": "dim"}


_STATUS_WORDS = {
    200: "converged",
    400: "invalid configuration",
    406: "converging",
    412: "unsupported schema version",
    417: "empty configuration",
    500: "failed",
}
_CONVERGING_HINT = "modules are starting, then must stay up for the health window before it counts as converged"


def status_text(code: Any, description: str) -> str:
    """A deployment status in words, Azure's ``lastDesiredStatus`` code only as a detail at the end."""
    word = _STATUS_WORDS.get(int(code), "unknown") if str(code).isdigit() else "unknown"
    detail = description.strip()
    if code == 406 and detail in {"", "converging"}:
        detail = _CONVERGING_HINT
    text = word if not detail or detail == word else f"{word}: {detail}"
    return f"{text} (status code {code})" if str(code).isdigit() else text


def _attach(state_dir: Path | None) -> tuple[StateDir, ContainerRuntime]:
    path = state_dir or default_state_dir()
    try:
        attached = attach(path)
    except ModuleRuntimeError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    if attached is None:
        err.print(
            f"[red]error:[/] no agent state in {path}: run `outpost agent apply MANIFEST` first, or pass --state-dir"
        )
        raise typer.Exit(1)
    state, runtime, _ = attached
    return state, runtime


def _live_status(state: StateDir, runtime: ContainerRuntime) -> dict[str, Any]:
    """The reported document recomputed from the runtime now, keeping the agent's last verdict."""
    saved = state.status() or {}
    stored = state.desired()
    if stored is None:
        return saved
    try:
        desired = compose(state, runtime).desired_from(stored)
    except ManifestError:
        return saved
    last = saved.get("lastDesiredStatus", {})
    verdict = DeploymentStatus(
        version=int(saved.get("lastDesiredVersion", stored.version)),
        code=StatusCode(int(last.get("code", 406))),
        description=str(last.get("description", "")),
        deployment_id=stored.id,
        rolled_back_to=str((saved.get("outpost") or {}).get("rolledBackTo") or ""),
    )
    return reported(
        desired=desired,
        observed=runtime.observe(),
        records=state.restarts(),
        now=time.time(),
        deployment=verdict,
        platform=(saved.get("runtime") or {}).get("platform", {}),
        runtime_kind=runtime.kind,
        failures=Failures.from_json(state.failures()).latest(),
    )


def list_modules(
    state_dir: StateOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the reported document as JSON.")] = False,
) -> None:
    """Show every module of the local deployment: state, restarts, image, why it stopped."""
    state, runtime = _attach(state_dir)
    status = _live_status(state, runtime)
    if json_out:
        print_json(status)
        return
    table = Table(title_justify="left")
    for column in ("MODULE", "STATUS", "DESCRIPTION", "RESTARTS", "IMAGE", "STARTED"):
        table.add_column(column)
    modules = {**status.get("systemModules", {}), **status.get("modules", {})}
    for name, module in modules.items():
        runtime_status = module.get("runtimeStatus", "unknown")
        colour = _COLOURS.get(runtime_status, "white")
        table.add_row(
            escape(name),
            f"[{colour}]{runtime_status}[/]",
            escape(str(module.get("statusDescription", ""))),
            str(module.get("restartCount", 0)),
            escape(str(module.get("settings", {}).get("image", ""))),
            str(module.get("lastStartTimeUtc") or "-"),
        )
    last = status.get("lastDesiredStatus", {})
    outpost = status.get("outpost", {})
    verdict = status_text(last.get("code", ""), str(last.get("description", "")))
    table.title = escape(f"deployment {outpost.get('deploymentId', '?')}: {verdict}")
    out.print(table)


def _known_module(state: StateDir, runtime: ContainerRuntime, module: str) -> None:
    """Exit 1 naming the deployment's modules when ``module`` is not one of them (before asking the runtime)."""
    stored = state.desired()
    if stored is None:
        err.print(
            f"[red]error:[/] no module named {escape(module)!r}: no deployment is applied in {escape(str(state.path))} "
            "yet; apply one with `outpost agent apply MANIFEST`"
        )
        raise typer.Exit(1)
    try:
        names = sorted(compose(state, runtime).desired_from(stored).modules)
    except ManifestError:
        return
    if module not in names:
        err.print(
            f"[red]error:[/] no module named {escape(module)!r} in the deployment; "
            f"modules: {escape(', '.join(names) or 'none')}"
        )
        raise typer.Exit(1)


def logs(
    module: Annotated[str, typer.Argument(metavar="MODULE", help="Module name (see `outpost list`).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", help="Only the last N lines.")] = None,
    state_dir: StateOpt = None,
) -> None:
    """Print a module's output (stdout and stderr)."""
    state, runtime = _attach(state_dir)
    _known_module(state, runtime, module)
    try:
        for line in runtime.logs(module, tail=tail, follow=follow):
            typer.echo(line)
    except ModuleRuntimeError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        return


def restart(
    module: Annotated[str, typer.Argument(metavar="MODULE", help="Module name (see `outpost list`).")],
    state_dir: StateOpt = None,
) -> None:
    """Restart one module now (stop, then start), or retry its failed commands; the agent keeps supervising it."""
    state, runtime = _attach(state_dir)
    _known_module(state, runtime, module)
    try:
        done = restart_module(state, runtime, module, time.time())
    except ModuleRuntimeError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}; see `outpost list` for the module names")
        raise typer.Exit(1) from exc
    err.print(escape(done))


def check(
    state_dir: StateOpt = None,
    broker: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="Edge hub broker address to probe.")
    ] = "127.0.0.1:1883",
    json_out: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check that this device can run its deployment: runtime, disk, clock, broker, state.

    Exits 0 when every check passes and 1 when any finds a problem (an error or a warning).
    """
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"expects HOST:PORT, got {broker!r}", param_hint="'--broker'")
    path = state_dir or default_state_dir()
    state: StateDir | Path = StateDir(path) if path.is_dir() else path  # checking never creates it
    runtime: ContainerRuntime | None = None
    problem = ""
    try:
        runtime = runtime_of(state)
    except ModuleRuntimeError as exc:
        problem = str(exc)
    checks = gather(state, runtime, problem, broker, host_probes())
    if json_out:
        print_json([{"name": c.name, "level": c.level.value, "message": c.message, "hint": c.hint} for c in checks])
    else:
        marks = {Level.OK: "[green]✔[/]", Level.WARN: "[yellow]![/]", Level.ERROR: "[red]✘[/]"}
        for c in checks:
            hint = f"  [dim]→ {escape(c.hint)}[/]" if c.hint else ""
            err.print(f"{marks[c.level]} {c.name:<11} {escape(c.message)}{hint}")
    raise typer.Exit(0 if all(c.level is Level.OK for c in checks) else 1)
