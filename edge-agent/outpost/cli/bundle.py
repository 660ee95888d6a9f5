"""``outpost bundle``: carry deployments to a site with no network, and its data home."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from outpost.agent.reconciler import ApplyResult
from outpost.agent.state import StateDir
from outpost.bundle.adapters.docker_images import DockerImages
from outpost.bundle.adapters.fetch import open_source
from outpost.bundle.apply import apply_bundle, check_bundle
from outpost.bundle.blobs import BlobDir
from outpost.bundle.create import create_bundle
from outpost.bundle.layout import Progress as ProgressFn
from outpost.bundle.layout import no_progress
from outpost.cli.agent import (
    DeviceOpt,
    HubOpt,
    NamespaceOpt,
    StateOpt,
    WorkdirOpt,
    _read_manifest,
    default_state_dir,
    make_reconciler,
    open_runtime,
)
from outpost.cli.output import err, print_json
from outpost.errors import InputError, ManifestError
from outpost.trust.admission import Admission
from outpost.trust.keys import read_private
from outpost.trust.store import TrustStore

app = typer.Typer(
    help="Offline bundles: deploy with no network (create, verify, apply) and bring a site's data home.",
    no_args_is_help=True,
)

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
        Path, typer.Option("--manifest", help="Deployment manifest (JSON).", exists=True, dir_okay=False)
    ],
    platform: Annotated[
        str | None, typer.Option("--platform", help="Device platform, e.g. linux/arm64 [default: this engine's].")
    ] = None,
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="Operator private key: signs the content and the bundle.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Deployment name [default: manifest file stem].")] = None,
    json_out: Json = False,
) -> None:
    """Pack a deployment for a site with no network: content, images for the platform, twins' model files.

    Every image the manifest runs must be in this engine, built for --platform; each layer is
    stored once. Model files that module twins point to (a path, file:// or a loopback URL)
    are packed and checked against their sha256. The bundle lists the sha256 of every file
    and, with --sign-key, is signed (and so is its content).
    """
    document = _read_manifest(manifest)
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
                name=name or manifest.stem,
                progress=progress,
            )
    except ManifestError as exc:
        raise _problems(str(manifest), exc) from exc
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


def _trusted(state_dir: Path | None) -> tuple[TrustStore, dict[str, Any]]:
    store = TrustStore.of_state_dir(state_dir or default_state_dir())
    return store, dict(store.trusted())


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle file.", exists=True, dir_okay=False)],
    state_dir: StateOpt = None,
    json_out: Json = False,
) -> None:
    """Check a bundle's signature (against this device's trusted keys) and every file's sha256."""
    try:
        _, trusted = _trusted(state_dir)
        with tempfile.TemporaryDirectory(prefix=".bundle-verify-", dir=bundle.parent) as tmp, _bar(not json_out) as bar:
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
    bundle: Annotated[Path, typer.Argument(help="Bundle file.", exists=True, dir_okay=False)],
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
            rt = open_runtime(state, runtime, namespace, workdir=workdir, device_id=device_id, hub=hub)
            return make_reconciler(state, rt, admit=admission).apply(document, name=name, timeout=timeout)

        with _bar(not json_out) as bar:
            applied = apply_bundle(
                bundle,
                engine=DockerImages(),
                trusted=trusted,
                admit=admission,
                deploy=deploy,
                models_dir=models_dir or state.path.parent / "models",
                work_dir=state.path / "bundles",
                progress=bar,
            )
    except ManifestError as exc:
        raise _problems(f"{bundle}:content.json", exc) from exc
    except InputError as exc:
        err.print("[red]refused[/]; nothing on the device was changed")
        raise _fail(str(exc)) from exc
    result = applied.result
    assert result is not None
    if json_out:
        print_json(
            {
                "converged": result.converged,
                "code": int(result.code),
                "description": result.description,
                "deployment": result.deployment_id,
                "rolledBackTo": result.rolled_back_to or None,
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


def _warn(text: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(text)}")
