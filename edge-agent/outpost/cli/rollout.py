"""``outpost rollout start|status|list|pause|resume|abort|approve``: A/B model rollouts to a group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from outpost.cli.fleet import CaOpt, FleetOpt, JsonOpt, TokenOpt, connect
from outpost.cli.output import err, out, print_json, print_list
from outpost.errors import InputError
from outpost.trust.content import payload
from outpost.trust.keys import key_id, read_private
from outpost.trust.parts import part_document, sign_content
from outpost.trust.signing import Context, Signature, check

app = typer.Typer(
    help="Roll a model out to part of a group step by step, gated on live metrics against the rest; "
    "failing gates roll back on their own, passing every step promotes.",
    no_args_is_help=True,
)
URL = "http://127.0.0.1:9700"
NameArg = Annotated[str, typer.Argument(help="The rollout's name.")]


def _steps(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        err.print(f"[red]error:[/] --steps expects percentages like 5,25,50,100, got {escape(text)!r}")
        raise typer.Exit(2) from exc


def _show(status: dict[str, Any]) -> None:
    state = status["state"]
    out.print(
        f"[bold]{escape(status['name'])}[/]: {state}, step {status['step'] + 1}/{len(status['steps'])} "
        f"({status['percent']:g} %), {escape(status['module'])} -> model {escape(str(status['model']['version']))}"
        f" (control {escape(str(status['controlModel'].get('version')))})"
        + (", signed" if status.get("signed") else "")
    )
    cohorts = status["cohorts"]
    per_model = ", ".join(f"{k}: {v}" for k, v in sorted(status["devicesPerModel"].items())) or "none"
    out.print(
        f"cohorts: {cohorts['treatment']} treatment, {cohorts['control']} control; devices per model: {per_model}"
    )
    last = status.get("last")
    if last:
        table = Table(title="gates", title_justify="left")
        for column in ("gate", "verdict", "value", "limit", "test", "detail"):
            table.add_column(column)
        for g in last["gates"]:
            table.add_row(g["gate"], g["verdict"], str(g["value"]), str(g["limit"]), g["test"], escape(g["detail"]))
        out.print(table)
    if status.get("failure"):
        failed = ", ".join(g["gate"] for g in status["failure"].get("gates", [])) or "aborted by an operator"
        out.print(f"[red]stopped:[/] {escape(failed)}")
    if state == "awaiting-approval":
        following = status["step"] + 1
        what = "promote it" if following >= len(status["steps"]) or status["steps"][following] >= 100 else "go on"
        err.print(f"the step passed its gates: `outpost rollout approve {escape(status['name'])}` to {what}")


@app.command()
def start(
    name: NameArg,
    target: Annotated[str, typer.Option("--target", help="The group: a target condition, e.g. \"tags.site='a'\".")],
    module: Annotated[str, typer.Option("--module", help="The module whose desired model changes.")],
    model: Annotated[str, typer.Option("--model", help="NAME@VERSION from `outpost model list`.")],
    steps: Annotated[str, typer.Option("--steps", help="Treatment percentages, e.g. 5,25,50,100.")] = "5,25,50,100",
    soak: Annotated[str | None, typer.Option("--soak", help="Least time per step, e.g. 10m (default 10m).")] = None,
    min_devices: Annotated[
        int | None, typer.Option("--min-devices", help="Reporting devices each cohort needs (default 3).")
    ] = None,
    gate: Annotated[
        list[str] | None,
        typer.Option(
            "--gate",
            help="Limit NAME=VALUE: latency=10%, failures=0, alerts=0.05, errors=0.01, "
            "confidence=0.95, min-inferences=100 (repeatable).",
        ),
    ] = None,
    approve_each_step: Annotated[
        bool,
        typer.Option(
            "--approve-each-step", help="Wait for `outpost rollout approve` after each passed step, promotion included."
        ),
    ] = False,
    approve_promotion: Annotated[
        bool, typer.Option("--approve-promotion", help="Wait for `outpost rollout approve` before promoting only.")
    ] = False,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            help="Operator private key: sign every content the rollout can push (needed when the base is signed).",
            dir_okay=False,
        ),
    ] = None,
    fleet: FleetOpt = URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a rollout: a layered deployment gives the treatment cohort the model (see `outpost deploy list`).

    With --sign-key the command composes, before anything starts, the layer's content and the
    promoted base's content (the base deployment, which this key must have signed, with the
    candidate model), signs both and sends the signatures: devices with a trust root then verify
    every step and the promotion like any pushed deployment. The fleet never sees the key.
    """
    body: dict[str, Any] = {
        "name": name,
        "targetCondition": target,
        "module": module,
        "model": model,
        "steps": _steps(steps),
        "soak": soak,
        "minDevices": min_devices,
        "gates": gate or [],
        "approveEachStep": approve_each_step,
        "approvePromotion": approve_promotion,
    }
    with connect(fleet, token, ca) as client:
        if sign_key is not None:
            body["signatures"] = _sign(client, body, sign_key)
        status = client.json("POST", "/api/v1/rollouts", json=body)
    if json_out:
        print_json(status)
        return
    _show(status)
    err.print(f"watch it with `outpost rollout status {escape(name)}`")


def _sign(client: Any, body: dict[str, Any], sign_key: Path) -> dict[str, Any]:
    """The operator's signatures over every content the rollout can push, made over the base deployment
    the fleet will promote into (after checking that this key signed it) and the candidate it names."""
    from outpost.fleet.rollout.contents import rollout_contents  # pure; lazily, as the CLI keeps the fleet out

    try:
        key = read_private(sign_key)
    except InputError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}; nothing was started")
        raise typer.Exit(1) from exc
    kid = key_id(key.public_key())
    plan = client.json("POST", "/api/v1/rollouts/check", json=body)
    base = client.json("GET", f"/api/v1/deployments/{plan['baseDeployment']}")
    content = base["content"]["modulesContent"]
    try:
        given = [Signature.from_json(s) for s in base.get("signatures", [])]
    except ValueError:
        given = []
    verdict = check(Context.DEPLOYMENT, payload(part_document(content)), given, {kid: key.public_key()})
    if not verdict.ok:
        err.print(f"[red]error:[/] base deployment {escape(plan['baseDeployment'])!r} is not signed by key {kid} "
                  f"({escape(verdict.detail)}): the promotion would sign content this key never signed. Push the "
                  "base with `outpost deploy push --sign-key` using this key first; nothing was started")  # fmt: skip
        raise typer.Exit(1)
    model = plan["model"]
    contents = rollout_contents(content, plan["module"], model)
    err.print(f"signing with key {kid}: model {escape(str(model.get('version')))} (sha256 {model.get('sha256')}) "
              f"for {escape(plan['module'])}, promoting into {escape(plan['baseDeployment'])}")  # fmt: skip
    signed: dict[str, Any] = {"baseDeployment": plan["baseDeployment"]}
    for kind, doc in contents.by_kind().items():
        signed[kind] = [sign_content(doc, key).to_json()]
    return signed


@app.command()
def status(
    name: NameArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None, json_out: JsonOpt = False
) -> None:
    """Step, cohorts, devices per model, and every gate's value against its limit."""
    with connect(fleet, token, ca) as client:
        result = client.json("GET", f"/api/v1/rollouts/{name}")
    if json_out:
        print_json(result)
        return
    _show(result)


@app.command("list")
def list_rollouts(fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None, json_out: JsonOpt = False) -> None:
    """List rollouts."""
    with connect(fleet, token, ca) as client:
        rollouts = client.json("GET", "/api/v1/rollouts")
    print_list(
        rollouts,
        json_out=json_out,
        title=f"{len(rollouts)} rollout(s)",
        columns=("name", "state", "step", "model", "group"),
        row=lambda r: (
            escape(r["name"]),
            r["state"],
            f"{r['percent']:g} %",
            escape(str(r["model"]["version"])),
            escape(r["group"]),
        ),
    )


def _control(action: str, name: str, fleet: str, token: str | None, ca: Any) -> None:
    with connect(fleet, token, ca) as client:
        result = client.json("POST", f"/api/v1/rollouts/{name}/{action}")
    err.print(f"rollout {escape(name)}: {result['state']}")


@app.command()
def pause(name: NameArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Stop advancing (the cohorts keep their models)."""
    _control("pause", name, fleet, token, ca)


@app.command()
def resume(name: NameArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Go on from a pause, with a fresh window for the step."""
    _control("resume", name, fleet, token, ca)


@app.command()
def abort(name: NameArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Roll every treatment device back to the control model now."""
    _control("abort", name, fleet, token, ca)


@app.command()
def approve(name: NameArg, fleet: FleetOpt = URL, token: TokenOpt = None, ca: CaOpt = None) -> None:
    """Move a step that passed its gates on, or promote (with --approve-each-step or --approve-promotion)."""
    _control("approve", name, fleet, token, ca)
