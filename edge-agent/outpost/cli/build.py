"""``outpost build``: every module for every platform, pushed with a manifest list, digest-pinned.

Thin: options in, a plan from :mod:`outpost.builder.plan`, the runner with the real adapters, a table
(or ``--json``) out. Progress and explanations go to stderr, the ``module platform digest`` lines to
stdout.
"""

from __future__ import annotations

import json
import os
import platform as host
import stat
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from outpost.builder.adapters.docker_engine import DockerEngine
from outpost.builder.adapters.git_revision import head_revision
from outpost.builder.adapters.pip_wheels import PipWheels, sdk_wheel
from outpost.builder.adapters.registry_http import HttpRegistry
from outpost.builder.deployment import render_deployment
from outpost.builder.modules import discover_modules
from outpost.builder.plan import BuildPlan, BuildSettings, plan_builds
from outpost.builder.platforms import PLATFORMS, parse_platforms, platform_named
from outpost.builder.ports import Credentials
from outpost.builder.runner import BuildReport, BuildRunner, JobResult, Provenance
from outpost.builder.template import load_env
from outpost.cli.output import err, print_json
from outpost.errors import InputError, ManifestError, OutpostError

__all__ = ["build"]

DEFAULT_PLATFORMS = ",".join(p.docker for p in PLATFORMS)
DEFAULT_BASE = "outpost/base:bookworm-{debian}"
_MARK = {"built": "[green]built[/]", "up-to-date": "[dim]up to date[/]", "skipped": "[yellow]skipped[/]"}


class _Progress:
    """One progress line per module/platform while it works; a result line when it is done."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def step(self, job: str, text: str) -> None:
        task = self._tasks.get(job)
        if task is None:
            self._tasks[job] = self._progress.add_task(escape(f"{job}: {text}"), total=None)
        else:
            self._progress.update(task, description=escape(f"{job}: {text}"))

    def finished(self, result: JobResult) -> None:
        name = f"{result.module}/{result.platform}"
        task = self._tasks.pop(name, None)
        if task is not None:
            self._progress.remove_task(task)
        mark = _MARK.get(result.status, "[red]FAILED[/]")
        detail = result.digest or result.reason
        pushed = " (pushed)" if result.pushed else ""
        self._progress.console.print(
            f"{mark} {escape(result.module)} {result.docker_platform}{pushed} {escape(detail)}"
            + (f" [dim]{result.seconds:.1f} s[/]" if result.seconds >= 0.1 else ""),
            highlight=False,
        )


def _credentials(file: Path | None, env: dict[str, str]) -> Credentials | None:
    if file is not None:
        try:
            mode = file.stat().st_mode
            text = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(f"--registry-credentials {file}: cannot read it ({exc.strerror})") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InputError(f"--registry-credentials {file} is readable by others: chmod 600 {file}")
        if text.startswith("{"):
            try:
                doc = json.loads(text)
                return Credentials(str(doc["username"]), str(doc["password"]))
            except (ValueError, KeyError, TypeError):
                raise InputError(f'{file}: expected {{"username": ..., "password": ...}}') from None
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise InputError(f"{file}: expected USERNAME:PASSWORD on one line (or JSON)")
        return Credentials(user, password)
    for prefix in ("OUTPOST_REGISTRY", "CONTAINER_REGISTRY"):
        name = env.get(f"{prefix}_USERNAME")
        if name:
            return Credentials(name, env.get(f"{prefix}_PASSWORD", ""))
    return None


def _base_images(items: list[str] | None) -> dict[str, str]:
    bases = {p.key: DEFAULT_BASE.format(debian=p.debian, key=p.key, arch=p.architecture) for p in PLATFORMS}
    for item in items or []:
        key, sep, image = item.partition("=")
        if not sep:  # one template for every platform
            bases = {p.key: item.format(debian=p.debian, key=p.key, arch=p.architecture) for p in PLATFORMS}
            continue
        bases[platform_named(key).key] = image
    return bases


def _revision(env: dict[str, str], modules_dir: Path) -> str:
    """The commit the modules come from: $GITHUB_SHA in Actions, else git's HEAD of the modules folder."""
    return env.get("GITHUB_SHA") or head_revision(modules_dir)


def _source_url(env: dict[str, str]) -> str:
    if env.get("GITHUB_REPOSITORY"):
        return f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_REPOSITORY']}"
    return env.get("OUTPOST_BUILD_SOURCE", "")


def _source_checkout() -> Path | None:
    """The Outpost checkout this command runs from (editable install), if it is one."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "outpost"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: a deployment may carry registry credentials."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _summary(report: BuildReport, deployment: Path | None) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "seconds": round(report.seconds, 2),
        "wheels_seconds": round(report.wheels_seconds, 2),
        "images": [
            {
                "module": j.module,
                "platform": j.docker_platform,
                "status": j.status,
                "tag": j.tag,
                "image": j.remote,
                "digest": j.digest,
                "pushed": j.pushed,
                "seconds": round(j.seconds, 2),
                "phases": {name: round(value, 2) for name, value in j.phases.items()},
                **({"reason": j.reason} if j.reason else {}),
            }
            for j in report.jobs
        ],
        "modules": [
            {
                "module": m.module,
                "ok": m.ok,
                "image": m.list_ref,
                "digest": m.list_digest,
                "pushed": m.list_pushed,
                **({"error": m.error} if m.error else {}),
            }
            for m in report.modules
        ],
        "deployment": str(deployment) if deployment else None,
    }


def _run(
    plan: BuildPlan,
    settings: BuildSettings,
    *,
    push: str | None,
    credentials: Credentials | None,
    jobs: int,
    work_dir: Path,
    sdk: str,
    provenance: Provenance,
) -> BuildReport:
    try:
        local_wheels: tuple[Path, ...] = ()
        if sdk == "auto":
            checkout = _source_checkout()
            local_wheels = (sdk_wheel(checkout, work_dir / "sdk"),) if checkout else ()
        elif sdk != "none":
            path = Path(sdk)
            local_wheels = tuple(sorted(path.glob("*.whl"))) if path.is_dir() else (path,)
            if not local_wheels or not all(p.is_file() for p in local_wheels):
                raise InputError(f"--sdk-wheel {sdk}: no such wheel (a .whl file or a folder of them)")
        with (
            closing(DockerEngine()) as engine,
            Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
            ) as progress,
        ):
            runner = BuildRunner(
                engine=engine,
                wheels=PipWheels(),
                registry=HttpRegistry(push, credentials) if push else None,
                credentials=credentials,
                work_dir=work_dir,
                local_wheels=local_wheels,
                provenance=provenance,
                reporter=_Progress(progress),
                jobs=jobs,
                host_platform=platform_named(host.machine()).key,
            )
            return runner.run(plan, settings)
    except InputError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except OutpostError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _deployment(
    report: BuildReport, template: Path | None, text: str | None, output: Path, env: dict[str, str]
) -> tuple[Path | None, bool]:
    """Write the digest-pinned deployment; return it (or None) and whether the build failed."""
    failed = not report.ok
    if text is None or template is None:
        return None, failed
    if failed:
        err.print(f"[yellow]{escape(str(template))}: not expanded, because a module failed[/]")
        return None, True
    try:
        doc = render_deployment(text, report.images(), env, source=str(template))
    except ManifestError as exc:
        for problem in exc.problems:
            err.print(f"[red]{escape(str(output))}: {escape(str(problem))}[/]")
        return None, True
    except InputError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return None, True
    _write_private(output, json.dumps(doc, indent=2) + "\n")
    err.print(f"wrote {escape(str(output))} (validated; images pinned by digest)")
    return output, False


def _print_table(report: BuildReport) -> None:
    for job in report.jobs:
        if job.status in ("built", "up-to-date"):
            typer.echo(f"{job.module}\t{job.docker_platform}\t{job.digest or job.tag}")
    for module in report.modules:
        if module.ok and module.list_digest:
            typer.echo(f"{module.module}\tmanifest-list\t{module.list_digest}")
    for module in report.modules:
        if not module.ok:
            err.print(f"[red]{escape(module.module)} failed:[/] {escape(module.error)}")
    counts = {status: sum(1 for j in report.jobs if j.status == status) for status in _MARK} | {
        "failed": sum(1 for j in report.jobs if j.status == "failed")
    }
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    err.print(f"{summary or 'nothing to build'} in {report.seconds:.1f} s")


def build(
    modules: Annotated[
        list[str] | None, typer.Argument(help="Module folder names to build (default: every module).")
    ] = None,
    modules_dir: Annotated[
        Path, typer.Option("--modules-dir", help="Folder with one sub-folder (module.json) per module.")
    ] = Path("modules"),
    platform: Annotated[
        str, typer.Option("--platform", help="Comma-separated target platforms (also amd64, arm64v8, arm32v7).")
    ] = DEFAULT_PLATFORMS,
    push: Annotated[
        str | None, typer.Option("--push", metavar="REGISTRY", help="Push images and manifest lists to HOST[:PORT].")
    ] = None,
    registry_credentials: Annotated[
        Path | None,
        typer.Option(
            "--registry-credentials",
            help="0600 file with USERNAME:PASSWORD (default: $OUTPOST_REGISTRY_USERNAME/_PASSWORD, "
            "or iotedgedev's $CONTAINER_REGISTRY_USERNAME/_PASSWORD).",
        ),
    ] = None,
    template: Annotated[
        Path | None, typer.Option("--template", help="iotedgedev deployment.template.json to expand.", dir_okay=False)
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where the digest-pinned deployment goes (written 0600).")
    ] = Path("deployment.json"),
    env_file: Annotated[
        Path, typer.Option("--env-file", help="Variables for $VAR/${VAR} (the environment wins).")
    ] = Path(".env"),
    base_image: Annotated[
        list[str] | None,
        typer.Option(
            "--base-image",
            help="PLATFORM=IMAGE for the Dockerfiles' BASE argument, or one pattern for all "
            f"({{debian}}, {{key}}, {{arch}}) (default: {DEFAULT_BASE}).",
        ),
    ] = None,
    python_version: Annotated[
        str, typer.Option("--python-version", help="The base images' Python, for the wheels.")
    ] = "3.11",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Modules built at the same time.")] = 2,
    work_dir: Annotated[
        Path, typer.Option("--work-dir", help="Wheelhouses, staged contexts and the build record.")
    ] = Path(".outpost/build"),
    sdk: Annotated[
        str,
        typer.Option(
            "--sdk-wheel",
            help="The Outpost SDK wheel put in every module's wheels/: a .whl, a folder of them, 'auto' "
            "(built from this Outpost checkout) or 'none'.",
        ),
    ] = "auto",
    revision: Annotated[
        str | None,
        typer.Option("--revision", help="Source revision label (default: $GITHUB_SHA, or git HEAD of --modules-dir)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of the table.")] = False,
) -> None:
    """Build every module for every platform with BuildKit, push, and pin the deployment to digests.

    Reads iotedgedev's module.json unchanged; a module is rebuilt and re-pushed only when its inputs
    (context, Dockerfile, wheels, base image) changed. Each image is smoke-tested on its own platform
    (under QEMU for foreign ones). Prints MODULE PLATFORM DIGEST per image. Exits 1 if any module
    failed (the others are still pushed), 2 on bad input.
    """
    try:
        env = load_env(env_file, os.environ)
        platforms = parse_platforms(platform)
        specs = discover_modules(modules_dir, modules, env)
        settings = BuildSettings(
            platforms=platforms, base_images=_base_images(base_image), registry=push, python_version=python_version
        )
        plan = plan_builds(specs, settings)
        credentials = _credentials(registry_credentials, env) if push else None
        template_text = template.read_text(encoding="utf-8") if template else None
    except InputError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None

    provenance = Provenance(
        revision=revision if revision is not None else _revision(env, modules_dir),
        source=_source_url(env),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    report = _run(
        plan,
        settings,
        push=push,
        credentials=credentials,
        jobs=jobs,
        work_dir=work_dir,
        sdk=sdk,
        provenance=provenance,
    )
    deployment, failed = _deployment(report, template, template_text, output, env)
    if json_out:
        print_json(_summary(report, deployment))
    else:
        _print_table(report)
    if failed:
        raise typer.Exit(1)
