"""``outpost bundle``: carry deployments to a site with no network, and its data home."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from outpost.agent.environment import default_device_id
from outpost.agent.reconciler import ApplyResult
from outpost.agent.state import StateDir
from outpost.bundle.adapters.docker_images import DockerImages
from outpost.bundle.adapters.fetch import open_source
from outpost.bundle.apply import apply_bundle, check_bundle, record_refusal
from outpost.bundle.blobs import BlobDir
from outpost.bundle.create import create_bundle
from outpost.bundle.layout import Progress as ProgressFn
from outpost.bundle.layout import no_progress
from outpost.bundle.upstream import export_upstream, import_upstream, release
from outpost.cli.agent import (
    DeviceOpt,
    HubOpt,
    NamespaceOpt,
    StateOpt,
    WorkdirOpt,
    _read_manifest,
    default_state_dir,
    open_agent,
)
from outpost.cli.fleet import CaOpt, FleetOpt, TokenOpt, connect
from outpost.cli.output import err, print_json
from outpost.errors import InputError, ManifestError, OutpostError
from outpost.files import write_atomic
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.service import sink_from_settings
from outpost.manifest import load_manifest
from outpost.trust.admission import Admission
from outpost.trust.keys import device_key, read_private
from outpost.trust.store import TrustStore

app = typer.Typer(
    help="Offline bundles: deploy with no network (create, verify, apply) and bring a site's data home.",
    no_args_is_help=True,
)

FLEET_URL = "http://127.0.0.1:9700"
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@contextmanager
def _bar(enabled: bool) -> Iterator[ProgressFn]:
    """A rich progress bar per step (``what``), or nothing with --json."""
    if not enabled:
        yield no_progress
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(escape(what[-48:]), total=total or None)
            bar.update(tasks[what], completed=done, total=total or None)

        yield update


def _fail(text: str) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(text)}")
    return typer.Exit(1)


def _problems(where: str, exc: ManifestError) -> typer.Exit:
    for p in exc.problems:
        typer.echo(f"{where}: {p.pointer or '/'}: {p.message}", err=True)
    err.print("[red]refused[/]; nothing on the device was changed")
    return typer.Exit(1)


@app.command()
def create(
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle file to write (a tar).", dir_okay=False)],
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Deployment manifest (JSON).", exists=True, dir_okay=False)
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option("--deployment", help="A base deployment on the fleet (--fleet): its content, as signed at push."),
    ] = None,
    platform: Annotated[
        str | None, typer.Option("--platform", help="Device platform, e.g. linux/arm64 [default: this engine's].")
    ] = None,
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="Operator private key: signs the content and the bundle.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Deployment name [default: --deployment, or the manifest file stem].")
    ] = None,
    fleet: FleetOpt = FLEET_URL,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: Json = False,
) -> None:
    """Pack a deployment for a site with no network: content, images for the platform, twins' model files.

    Every image the manifest runs must be in this engine, built for --platform; each layer is
    stored once. Model files that module twins point to (a path, file:// or a loopback URL)
    are packed and checked against their sha256. The bundle lists the sha256 of every file
    and, with --sign-key, is signed (and so is its content).

    --deployment NAME packs a base deployment from the fleet instead of a file, with the
    signatures the operator made at `outpost deploy push --sign-key`.
    """
    if (manifest is None) == (deployment is None):
        err.print("[red]error:[/] give one of --manifest FILE or --deployment NAME (with --fleet URL)")
        raise typer.Exit(2)
    document = _read_manifest(manifest) if manifest is not None else _fleet_content(fleet, token, ca, str(deployment))
    where = str(manifest) if manifest is not None else f"{fleet} deployment {deployment}"
    try:
        key = read_private(sign_key) if sign_key else None
        engine = DockerImages()
        with _bar(not json_out) as progress:
            created = create_bundle(
                document,
                platform=platform or engine.platform(),
                output=output,
                engine=engine,
                opener=open_source,
                sign_key=key,
                name=name or deployment or (manifest.stem if manifest else "bundle"),
                progress=progress,
            )
    except ManifestError as exc:
        raise _problems(where, exc) from exc
    except InputError as exc:
        raise _fail(str(exc)) from exc
    index = created.index
    if json_out:
        print_json(
            {"bundle": str(created.path), "size": created.size, "signed": key is not None, "warnings": created.warnings,
             **index.to_json()}
        )  # fmt: skip
        return
    for text in created.warnings:
        err.print(f"[yellow]note:[/] {escape(text)}")
    layers = {x for i in index.images for x in i.layers}
    err.print(
        f"wrote [bold]{escape(str(created.path))}[/] ({created.size / 1e6:.1f} MB) for {index.platform}: "
        f"{len(index.images)} image(s), {len(layers)} distinct layer(s), {len(index.models)} model file(s), "
        f"{len(index.twins)} module twin(s); " + ("signed" if key else "[yellow]unsigned[/]")
    )


def _fleet_content(url: str, token: str | None, ca: Path | None, name: str) -> dict[str, Any]:
    """A base deployment's content from the fleet as a manifest, carrying the operator's signatures
    over it (``trust.parts``: a base deployment's signed part is a signed manifest)."""
    with connect(url, token, ca) as client:
        record = client.deployment(name)
    if record.get("layered"):
        hint = "bundle its base deployment, or compose one with `outpost manifest show --layer` and use --manifest"
        err.print(f"[red]error:[/] {escape(name)} is a layered deployment, not a whole manifest: {hint}")
        raise typer.Exit(1)
    document: dict[str, Any] = {"modulesContent": record["content"]["modulesContent"]}
    if record.get("signatures"):
        document["outpost"] = {"signatures": list(record["signatures"])}
    return document


def _trusted(state_dir: Path | None) -> tuple[TrustStore, dict[str, Any]]:
    store = TrustStore.of_state_dir(state_dir or default_state_dir())
    return store, dict(store.trusted())


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle file.", dir_okay=False)],
    state_dir: StateOpt = None,
    json_out: Json = False,
) -> None:
    """Check a bundle's signature (against this device's trusted keys) and every file's sha256."""
    try:
        _, trusted = _trusted(state_dir)
        work = (state_dir or default_state_dir()) / "bundles"
        work.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(prefix=".bundle-verify-", dir=work) as tmp, _bar(not json_out) as bar:
            verified = check_bundle(bundle, trusted=trusted, staging=BlobDir(Path(tmp)), progress=bar)
    except InputError as exc:
        raise _fail(str(exc)) from exc
    if json_out:
        print_json(
            {"valid": True, "signer": verified.signer or None, "note": verified.note, **verified.index.to_json()}
        )
        return
    who = f"signed by trusted key {verified.signer}" if verified.signer else verified.note
    err.print(f"[green]valid[/]: {len(verified.index.files)} file(s) match their sha256; {escape(who)}")


@app.command()
def apply(
    bundle: Annotated[Path, typer.Argument(help="Bundle file.", dir_okay=False)],
    state_dir: StateOpt = None,
    runtime: Annotated[str, typer.Option("--runtime", help="docker (bundles carry Docker images) or auto.")] = "docker",
    namespace: NamespaceOpt = "default",
    workdir: WorkdirOpt = None,
    device_id: DeviceOpt = None,
    hub: HubOpt = "127.0.0.1:1883",
    models_dir: Annotated[
        Path | None,
        typer.Option("--models-dir", help="Where model files fetched by URL go [default: STATE_DIR/../models]."),
    ] = None,
    require_digests: Annotated[
        bool | None,
        typer.Option("--require-digests/--allow-tags", help="Refuse tag-only images [default: the trust policy]."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to converge before giving up.")] = 300.0,
    json_out: Json = False,
) -> None:
    """Apply a bundle with no network: verify everything first, load images, deploy through the agent.

    A truncated or altered bundle, one signed by a key this device does not trust, or one for
    another platform is refused before anything changes. Otherwise the images are loaded, the
    model files installed, and the content applied with the agent's usual rules (health
    window, rollback to the last known good deployment). Exit 0 when the device converged.
    """
    state_path = state_dir or default_state_dir()
    try:
        store, trusted = _trusted(state_path)
        state = StateDir(state_path)
        admission = Admission(store, require_digests=require_digests, on_warning=_warn)

        def deploy(document: dict[str, Any], name: str) -> ApplyResult:
            agent = open_agent(state.path, runtime, namespace, workdir, device_id=device_id, hub=hub, admit=admission)
            return agent.reconciler.apply(document, name=name, timeout=timeout)

        with _bar(not json_out) as bar:
            applied = apply_bundle(
                bundle,
                engine=DockerImages(),
                trusted=trusted,
                admit=admission,
                deploy=deploy,
                models_dir=models_dir or state.path.parent / "models",
                work_dir=state.path / "bundles",
                pin=state.pin_images,
                progress=bar,
            )
    except ManifestError as exc:
        _record(state_path, bundle, "; ".join(f"content.json: {p.pointer or '/'}: {p.message}" for p in exc.problems))
        raise _problems(f"{bundle}:content.json", exc) from exc
    except InputError as exc:
        _record(state_path, bundle, str(exc))
        err.print("[red]refused[/]; nothing on the device was changed")
        raise _fail(str(exc)) from exc
    result = applied.result
    assert result is not None
    if json_out:
        print_json(
            {
                **result.summary(),
                "signer": applied.verified.signer or None,
                "contentSigner": applied.admitted.key_id or None,
                "images": applied.images,
                "models": applied.models,
                "warnings": list(applied.admitted.warnings),
            }
        )
    elif result.converged:
        err.print(f"[green]applied[/]: {escape(result.deployment_id)} ({len(applied.images)} image(s) loaded)")
    else:
        err.print(f"[red]failed[/]: {escape(result.description)}")
    raise typer.Exit(0 if result.converged else 1)


def _record(state_path: Path, bundle: Path, reason: str) -> None:
    """The refusal in status.json too (the fleet and `outpost agent list` read it), not only on stderr."""
    try:
        record_refusal(StateDir(state_path), bundle, reason)
    except (OSError, OutpostError) as exc:
        err.print(f"[yellow]note:[/] could not write the refusal to the agent's status: {escape(str(exc))}")


def _warn(text: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(text)}")


# --- bundle up ------------------------------------------------------------------------------------

HubStateOpt = Annotated[
    Path | None, typer.Option("--hub-state", help="Hub state directory [default: STATE_DIR/../hub].")
]


def _hub_store(state_path: Path, hub_state: Path | None) -> SqliteStore:
    path = (hub_state or state_path.parent / "hub") / "store.db"
    if not path.exists():
        raise InputError(f"no hub store at {path}: pass --hub-state (the hub's --state-dir)")
    return SqliteStore(path)


def _device_id(state: StateDir, given: str | None) -> str:
    record = state.runtime_record()
    return given or (record.device if record else default_device_id())


def _reported(state: StateDir, hub_state: Path) -> dict[str, Any]:
    """What the device reports: the agent's status and each module's reported properties."""
    modules = {}
    for path in sorted((hub_state / "twins").glob("reported-*.json")):
        with contextlib.suppress(OSError, ValueError):
            modules[path.stem.removeprefix("reported-")] = json.loads(path.read_text())
    return {"$edgeAgent": state.status() or {}, "modules": modules}


@app.command("export-upstream")
def export_upstream_cmd(
    output: Annotated[Path, typer.Option("-o", "--output", help="Export file to write (a tar).", dir_okay=False)],
    state_dir: StateOpt = None,
    hub_state: HubStateOpt = None,
    device_id: DeviceOpt = None,
    json_out: Json = False,
) -> None:
    """Write what the hub holds for $upstream, and the reported properties, signed by this device.

    Nothing is removed: the messages stay queued (and still drain if a link appears) until
    `outpost bundle receipt` releases the ones delivered at the other end.
    """
    state = StateDir(state_dir or default_state_dir())
    try:
        store = _hub_store(state.path, hub_state)
        try:
            exported = export_upstream(
                store,
                device_id=_device_id(state, device_id),
                reported=_reported(state, hub_state or state.path.parent / "hub"),
                key=device_key(state.path),
                output=output,
            )
        finally:
            store.close()
    except (InputError, OutpostError) as exc:
        raise _fail(str(exc)) from exc
    if json_out:
        print_json({"export": str(exported.path), "messages": exported.messages, "deviceKey": exported.key_id})
        return
    err.print(
        f"wrote [bold]{escape(str(exported.path))}[/]: {exported.messages} message(s), signed by device key "
        f"{exported.key_id}; they stay queued until a receipt comes back"
    )


@app.command("import-upstream")
def import_upstream_cmd(
    export: Annotated[Path, typer.Argument(help="Export file from `bundle export-upstream`.")],
    manifest: Annotated[
        Path, typer.Option("--manifest", help="Manifest whose $edgeHub outpost.upstream names the sink.", exists=True)
    ],
    receipt: Annotated[Path, typer.Option("-r", "--receipt", help="Receipt file to write.")] = Path("receipt.json"),
    ledger: Annotated[
        Path | None,
        typer.Option("--ledger", help="Importer store (remembers delivered ids) [default: ~/.local/state/outpost]."),
    ] = None,
    device_key_id: Annotated[
        list[str] | None, typer.Option("--device-key-id", help="Accept only exports signed by these device keys.")
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign-key", help="Operator key: signs the receipt (devices with a trust root need it)."),
    ] = None,
    fleet: Annotated[
        str | None,
        typer.Option("--fleet", help="Also deliver the reported properties to this fleet (device key registered)."),
    ] = None,
    token: TokenOpt = None,
    ca: CaOpt = None,
    json_out: Json = False,
) -> None:
    """Deliver an export through the hub's upstream sink (e.g. Kafka), duplicates dropped by message id.

    Writes a receipt naming every message now at the far end; take it back to the device
    (`outpost bundle receipt`). Importing the same export twice delivers nothing twice.
    Reported properties are written beside the receipt; with --fleet they are delivered to the
    fleet too, which checks the export's signature against the key registered for the device
    (`outpost device signing-key`) and drops an export it has imported already.
    """
    document = _read_manifest(manifest)
    try:
        parsed = load_manifest(document)
        ext = parsed.edge_hub.outpost
        sink = sink_from_settings(ext.upstream if ext else None, device_id="outpost-import")
        if sink is None:
            raise InputError(f"{manifest}: $edgeHub outpost.upstream names no sink to deliver to")
        key = read_private(sign_key) if sign_key else None
        root = ledger or Path.home() / ".local" / "state" / "outpost" / "import"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = SqliteStore(root / "ledger.db", dedupe_window_secs=10 * 365 * 86_400.0)
        try:
            with err.status("delivering…", spinner="dots") if not json_out else contextlib.nullcontext():
                imported = import_upstream(
                    export, store=store, sink=sink, device_keys=device_key_id or (), sign_key=key
                )
        finally:
            store.close()
            sink.close()
    except ManifestError as exc:
        raise _problems(str(manifest), exc) from exc
    except (InputError, OutpostError) as exc:
        raise _fail(str(exc)) from exc
    write_atomic(receipt, json.dumps(imported.receipt, indent=2) + "\n", 0o644)
    reported = receipt.with_name(receipt.stem + ".reported.json")
    write_atomic(reported, json.dumps(imported.reported, indent=2) + "\n", 0o644)
    summary = {
        "receipt": str(receipt),
        "reported": str(reported),
        "delivered": len(imported.delivered),
        "duplicates": len(imported.duplicates),
        "notDelivered": len(imported.pending),
        "failure": imported.failure or None,
    }
    if fleet is not None:
        summary["fleet"] = _import_reported(fleet, token, ca, str(imported.receipt["deviceId"]), imported.proof)
    if json_out:
        print_json(summary)
    else:
        err.print(
            f"delivered {summary['delivered']}, dropped {summary['duplicates']} duplicate(s), "
            f"{summary['notDelivered']} not delivered; receipt [bold]{escape(str(receipt))}[/]"
        )
        if imported.failure:
            err.print(f"[yellow]sink:[/] {escape(imported.failure)}; import again when it is back")
    raise typer.Exit(0 if not imported.pending else 1)


def _import_reported(url: str, token: str | None, ca: Path | None, device: str, proof: dict[str, Any]) -> Any:
    """The export's reported properties to the fleet (it checks the device's signature itself)."""
    err.print(f"receipt written; delivering the reported properties of {escape(device)} to {escape(url)}")
    with connect(url, token, ca) as client:
        result = client.json("POST", f"/api/v1/devices/{quote(device, safe='')}/upstream-imports", json=proof)
    if not result.get("applied"):
        err.print(f"[yellow]fleet:[/] reported properties not applied: {escape(str(result.get('reason')))}")
    else:
        err.print(f"fleet: reported properties of {len(result.get('modules', []))} module(s) delivered")
    return result


@app.command("receipt")
def receipt_cmd(
    receipt: Annotated[Path, typer.Argument(help="Receipt from `bundle import-upstream`.")],
    state_dir: StateOpt = None,
    hub_state: HubStateOpt = None,
    device_id: DeviceOpt = None,
    json_out: Json = False,
) -> None:
    """Release from the hub's store exactly the messages a receipt names (delivered at the far end)."""
    state = StateDir(state_dir or default_state_dir())
    try:
        try:
            document = json.loads(receipt.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{receipt}: not a readable JSON receipt ({exc})") from exc
        trusted = TrustStore.of_state_dir(state.path).trusted()
        store = _hub_store(state.path, hub_state)
        try:
            released = release(store, document, device_id=_device_id(state, device_id), trusted=trusted)
        finally:
            store.close()
    except (InputError, OutpostError) as exc:
        raise _fail(str(exc)) from exc
    if json_out:
        print_json({"released": released.released, "alreadyGone": released.already_gone})
        return
    err.print(f"released {released.released} message(s); {released.already_gone} were no longer queued")
