"""Runs a build plan: wheels first, then per module (modules in parallel) build, smoke-test, push,
and the module's manifest list; nothing of a module is pushed unless all its platforms built.

Everything the runner touches goes through :mod:`outpost.builder.ports`; the decisions come from
:func:`outpost.builder.plan.decide`. Called by the ``outpost build`` command.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from outpost.builder.index import MANIFEST_LIST, ImageManifest, build_index, digest_of
from outpost.builder.inputs import IGNORED_DIRS, digest_strings, file_digest, tree_digest
from outpost.builder.plan import KEY_LABEL, BuildPlan, BuildSettings, Job, decide, job_key
from outpost.builder.platforms import Platform
from outpost.builder.ports import (
    BuildError,
    BuildRequest,
    Credentials,
    ImageEngine,
    Registry,
    RegistryError,
    WheelSource,
)
from outpost.builder.provided import PROBE, format_provided, parse_provided
from outpost.builder.state import BuildState
from outpost.errors import OutpostError

__all__ = ["BuildReport", "BuildRunner", "JobResult", "ModuleResult", "Provenance", "Reporter"]

SMOKE_TIMEOUT_S = 180.0
PROBE_TIMEOUT_S = 120.0
# Every module's wheels/ gets pip's own wheel: a Dockerfile can run pip straight from it
# (`python3 pip-*.whl/pip install ...`) in a venv made --without-pip, instead of ensurepip, which
# takes minutes per image under QEMU emulation.
PIP = "pip==26.3"


@dataclass(frozen=True, slots=True)
class Provenance:
    """OCI annotations every built image carries as labels."""

    revision: str = ""
    source: str = ""
    created: str = ""


@dataclass
class JobResult:
    module: str
    platform: str  # iotedgedev key
    docker_platform: str
    status: str  # built | up-to-date | skipped | failed
    tag: str = ""
    remote: str = ""
    digest: str = ""
    pushed: bool = False
    seconds: float = 0.0
    reason: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # stage, build, smoke, push -> seconds


@dataclass
class ModuleResult:
    module: str
    ok: bool
    list_ref: str = ""  # repo@sha256:... (or the host platform's local tag when not pushing)
    list_digest: str = ""
    list_pushed: bool = False
    error: str = ""
    images: dict[str, str] = field(default_factory=dict)  # platform key -> reference


@dataclass
class BuildReport:
    jobs: list[JobResult]
    modules: list[ModuleResult]
    seconds: float = 0.0
    wheels_seconds: float = 0.0  # base images' packages listed and wheelhouses filled, before any build

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.modules) and not any(j.status == "failed" for j in self.jobs)

    def images(self) -> dict[str, dict[str, str]]:
        """Module name -> {"": list reference, platform key: image reference}, for templates."""
        return {m.module: {"": m.list_ref, **m.images} for m in self.modules if m.ok and m.list_ref}


class Reporter(Protocol):
    def step(self, job: str, text: str) -> None: ...

    def finished(self, result: JobResult) -> None: ...


@dataclass
class _Prepared:
    key: str
    wheels_digest: str


class BuildRunner:
    """Executes one plan with the given engine, registry and wheel source."""

    def __init__(
        self,
        *,
        engine: ImageEngine,
        wheels: WheelSource,
        registry: Registry | None,
        credentials: Credentials | None,
        work_dir: Path,
        local_wheels: tuple[Path, ...] = (),
        provenance: Provenance = Provenance(),
        reporter: Reporter,
        jobs: int = 2,
        host_platform: str = "amd64",
    ) -> None:
        self._engine = engine
        self._wheels = wheels
        self._registry = registry
        self._credentials = credentials
        self._work = work_dir
        self._local_wheels = local_wheels
        self._provenance = provenance
        self._reporter = reporter
        self._jobs = max(1, jobs)
        self._host = host_platform
        self._state = BuildState.load(work_dir / "state.json")
        self._state_lock = threading.Lock()
        self._results: list[JobResult] = []

    # -- wheels ------------------------------------------------------------------------------------
    def _provided(self, image: str, platform: Platform) -> dict[str, str]:
        """The Python distributions ``image`` already has (asked once per image id, then recorded)."""
        info = self._engine.inspect(image)
        if info is None:
            return {}  # the job reports the missing base image (see _key)
        with self._state_lock:
            recorded = self._state.provided.get(info.id)
        if recorded is not None:
            return parse_provided(recorded.replace(" ", "\n"))
        self._reporter.step(f"base/{platform.key}", f"listing the Python packages of {image}")
        result = self._engine.run(image, platform, ("python3", "-c", PROBE), PROBE_TIMEOUT_S)
        if result.exit_code != 0:
            tail = "\n".join(result.output.strip().splitlines()[-10:])
            raise BuildError(
                f"base image {image}: python3 could not list its packages (exit {result.exit_code}):\n{tail}"
            )
        provided = parse_provided(result.output)
        with self._state_lock:
            self._state.provided[info.id] = format_provided(provided)
        return provided

    def _provided_for(self, plan: BuildPlan, platform: Platform) -> dict[str, str]:
        """What every base image of ``platform``'s jobs provides (the wheelhouse serves them all)."""
        provided: dict[str, str] = {}
        for base in dict.fromkeys(job.base_image for job in plan.jobs if job.platform == platform):
            for name, version in self._provided(base, platform).items():
                provided.setdefault(name, version)
        return provided

    def _wheelhouse(self, platform_key: str, settings: BuildSettings) -> Path:
        return self._work / "wheelhouse" / f"cp{settings.python_version.replace('.', '')}-{platform_key}"

    def _prepare_wheels(self, plan: BuildPlan, settings: BuildSettings) -> str:
        """Fill each platform's wheelhouse when its requirements changed; return the local wheels' digest.

        Platforms in parallel: pip spends most of a fill waiting on the index, not on the CPU.
        """
        local = digest_strings(f"{p.name}:{file_digest(p)}" for p in self._local_wheels)
        platforms = [p for p in settings.platforms if p.key in plan.wheel_requirements]
        if platforms:
            with ThreadPoolExecutor(max_workers=len(platforms)) as pool:
                for future in [pool.submit(self._fill, plan, settings, p) for p in platforms]:
                    future.result()
        return local

    def _fill(self, plan: BuildPlan, settings: BuildSettings, platform: Platform) -> None:
        requirements = (*plan.wheel_requirements[platform.key], PIP)
        house = self._wheelhouse(platform.key, settings)
        provided = self._provided_for(plan, platform)
        key = digest_strings([platform.key, settings.python_version, *sorted(requirements), format_provided(provided)])
        stamp = house / ".key"
        if stamp.is_file() and stamp.read_text().strip() == key:
            return
        self._reporter.step(f"wheels/{platform.key}", f"downloading wheels for {platform.docker}")
        house.mkdir(parents=True, exist_ok=True)
        self._wheels.fill(platform, requirements, settings.python_version, house, provided=provided)
        stamp.write_text(key + "\n")

    # -- one image ---------------------------------------------------------------------------------
    def _stage(self, job: Job, settings: BuildSettings) -> tuple[Path, Path]:
        """A private copy of the module's context with its wheels/ for this platform."""
        stage = self._work / "contexts" / f"{job.module.name}-{job.platform.key}"
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(job.module.context, stage, ignore=shutil.ignore_patterns(*IGNORED_DIRS, "*.pyc"))
        wheels = stage / "wheels"
        wheels.mkdir()
        self._wheels.select(
            job.platform,
            (*job.requirements, PIP),
            settings.python_version,
            self._wheelhouse(job.platform.key, settings),
            wheels,
            provided=self._provided(job.base_image, job.platform),
        )
        for wheel in self._local_wheels:
            shutil.copy2(wheel, wheels / wheel.name)
        dockerfile = job.dockerfile
        if dockerfile.is_relative_to(job.module.context):
            dockerfile = stage / dockerfile.relative_to(job.module.context)
        return stage, dockerfile

    def _labels(self, job: Job, key: str) -> dict[str, str]:
        labels = {
            "org.opencontainers.image.title": job.module.name,
            "org.opencontainers.image.version": job.module.version,
            "org.opencontainers.image.created": self._provenance.created,
            "org.opencontainers.image.revision": self._provenance.revision,
            "org.opencontainers.image.source": self._provenance.source,
            "org.opencontainers.image.description": job.module.description,
            "org.opencontainers.image.base.name": job.base_image,
            KEY_LABEL: key,
        }
        return {k: v for k, v in labels.items() if v}

    def _build(self, job: Job, key: str, settings: BuildSettings, phases: dict[str, float]) -> None:
        self._reporter.step(job.name, "staging context and wheels")
        started = time.monotonic()
        stage, dockerfile = self._stage(job, settings)
        phases["stage"] = time.monotonic() - started
        request = BuildRequest(
            context=stage,
            dockerfile=dockerfile,
            platform=job.platform,
            tag=job.local_tag,
            build_args={settings.base_arg: job.base_image},
            labels=self._labels(job, key),
            options=job.module.build_options,
        )

        def log(line: str) -> None:
            self._reporter.step(job.name, f"building: {line[:100]}")

        started = time.monotonic()
        self._engine.build(request, log)
        phases["build"] = time.monotonic() - started
        started = time.monotonic()
        self._smoke_test(job)
        phases["smoke"] = time.monotonic() - started

    def _smoke_test(self, job: Job) -> None:
        info = self._engine.inspect(job.local_tag)
        if info is None:
            raise BuildError(f"{job.name}: the build reported success but {job.local_tag} does not exist")
        if info.architecture != job.platform.architecture:
            raise BuildError(
                f"{job.name}: built for {info.architecture}, not {job.platform.architecture}: is the base image "
                f"{job.base_image} built for {job.platform.docker}?"
            )
        if not job.module.smoke_test:
            return
        self._reporter.step(job.name, "smoke test: " + " ".join(job.module.smoke_test)[:80])
        result = self._engine.run(job.local_tag, job.platform, job.module.smoke_test, SMOKE_TIMEOUT_S)
        if result.exit_code != 0:
            tail = "\n".join(result.output.strip().splitlines()[-15:])
            raise BuildError(
                f"{job.name}: smoke test {list(job.module.smoke_test)} exited with {result.exit_code}:\n{tail}"
            )

    def _push(self, job: Job, key: str) -> ImageManifest:
        assert job.remote_tag is not None
        assert job.remote is not None
        assert self._registry is not None
        self._reporter.step(job.name, f"pushing {job.remote_tag}")
        self._engine.tag(job.local_tag, job.remote_tag)

        def log(line: str) -> None:
            self._reporter.step(job.name, f"pushing: {line[:100]}")

        digest = self._engine.push(job.remote_tag, self._credentials, log)
        info = self._registry.manifest(job.remote, job.module.tag(job.platform))
        if info is None or info.digest != digest:
            raise BuildError(f"{job.name}: pushed {job.remote_tag} as {digest} but the registry does not show it")
        with self._state_lock:
            self._state.pushed[job.remote_tag] = f"{info.digest} {info.media_type} {info.size} {key}"
        return ImageManifest(job.platform, info.digest, info.media_type, info.size)

    def _recorded(self, job: Job) -> tuple[ImageManifest | None, str | None]:
        """What the build record says was last pushed to the job's tag, and from which input key."""
        if job.remote_tag is None:
            return None, None
        with self._state_lock:
            record = self._state.pushed.get(job.remote_tag, "")
        parts = record.split()
        if len(parts) != 4 or not parts[2].isdigit():
            return None, None
        return ImageManifest(job.platform, parts[0], parts[1], int(parts[2])), parts[3]

    # -- one module --------------------------------------------------------------------------------
    def _module(self, module: str, plan: BuildPlan, settings: BuildSettings, local_wheels: str) -> ModuleResult:
        jobs = plan.jobs_of(module)
        results: dict[str, JobResult] = {}
        to_push: list[tuple[Job, str]] = []
        manifests: dict[str, ImageManifest] = {}
        failed = ""
        for job in jobs:
            started = time.monotonic()
            result = JobResult(module, job.platform.key, job.platform.docker, "up-to-date", tag=job.local_tag)
            results[job.platform.key] = result
            try:
                self._reporter.step(job.name, "checking inputs")
                key = self._key(job, settings, local_wheels)
                info = self._engine.inspect(job.local_tag)
                recorded, recorded_key = self._recorded(job)
                registry_digest = None
                if self._registry is not None and job.remote is not None and recorded is not None:
                    seen = self._registry.manifest(job.remote, job.module.tag(job.platform))
                    registry_digest = seen.digest if seen else None
                decision = decide(
                    key=key,
                    local_key=info.labels.get(KEY_LABEL) if info else None,
                    recorded_key=recorded_key,
                    recorded_digest=recorded.digest if recorded else None,
                    registry_digest=registry_digest,
                    pushing=self._registry is not None,
                )
                if decision.build:
                    self._build(job, key, settings, result.phases)
                    result.status = "built"
                if decision.push:
                    to_push.append((job, key))
                elif recorded is not None:
                    manifests[job.platform.key] = recorded
            except (OutpostError, OSError) as exc:
                result.status, result.reason = "failed", str(exc)
                failed = failed or str(exc)
            result.seconds = time.monotonic() - started
            if result.status == "failed" or not any(job is pushed for pushed, _ in to_push):
                self._finish(result, job, manifests.get(job.platform.key))
        if failed:
            for job, _ in to_push:  # built fine, but the module is not pushed half-way
                result = results[job.platform.key]
                result.reason = "not pushed: another platform of this module failed"
                self._finish(result, job, None)
            return ModuleResult(module, ok=False, error=failed)
        for job, key in to_push:
            started = time.monotonic()
            result = results[job.platform.key]
            try:
                manifests[job.platform.key] = self._push(job, key)
                result.pushed = True
                result.phases["push"] = time.monotonic() - started
            except (OutpostError, OSError) as exc:
                result.status, result.reason = "failed", str(exc)
                failed = failed or str(exc)
            result.seconds += time.monotonic() - started
            self._finish(result, job, manifests.get(job.platform.key))
        if failed:
            return ModuleResult(module, ok=False, error=failed)
        return self._finish_module(module, jobs, manifests)

    def _finish(self, result: JobResult, job: Job, manifest: ImageManifest | None) -> None:
        if manifest is not None and job.remote:
            result.remote = f"{job.remote}@{manifest.digest}"
            result.digest = manifest.digest
        self._report(result)

    def _report(self, result: JobResult) -> None:
        with self._state_lock:
            self._results.append(result)
        self._reporter.finished(result)

    def _finish_module(self, module: str, jobs: list[Job], manifests: dict[str, ImageManifest]) -> ModuleResult:
        if self._registry is None or not jobs or jobs[0].remote is None:
            images = {job.platform.key: job.local_tag for job in jobs}
            host = images.get(self._host, next(iter(images.values()), ""))
            return ModuleResult(module, ok=True, list_ref=host, images=images)
        remote = jobs[0].remote
        content = build_index([manifests[job.platform.key] for job in jobs])
        digest = digest_of(content)
        version = jobs[0].module.version
        result = ModuleResult(
            module,
            ok=True,
            list_ref=f"{remote}@{digest}",
            list_digest=digest,
            images={job.platform.key: f"{remote}@{manifests[job.platform.key].digest}" for job in jobs},
        )
        try:
            seen = self._registry.manifest(remote, version)
            if seen is None or seen.digest != digest:
                self._reporter.step(f"{module}/list", f"pushing manifest list {remote}:{version}")
                pushed = self._registry.put_manifest(remote, version, content, MANIFEST_LIST)
                if pushed != digest:
                    raise RegistryError(f"the registry stored the manifest list as {pushed}, expected {digest}")
                result.list_pushed = True
        except (OutpostError, OSError) as exc:
            return ModuleResult(module, ok=False, error=f"{module}: manifest list: {exc}")
        return result

    def _key(self, job: Job, settings: BuildSettings, local_wheels: str) -> str:
        base = self._engine.inspect(job.base_image)
        if base is None:
            script = "OUTPOST_BASE_HUB=1 " if "base-hub" in job.base_image else ""
            raise BuildError(
                f"{job.name}: base image {job.base_image} is not on this machine: build it "
                f"({script}scripts/services/base-images.sh {job.platform.debian}) or pass "
                f"--base-image {job.platform.key}=IMAGE"
            )
        if base.architecture != job.platform.architecture:
            raise BuildError(
                f"{job.name}: base image {job.base_image} is {base.architecture}, not {job.platform.architecture}"
            )
        wheels = digest_strings([job.platform.key, settings.python_version, *job.requirements, PIP, local_wheels])
        return job_key(
            job,
            context_digest=tree_digest(job.module.context),
            dockerfile_digest=file_digest(job.dockerfile),
            base_image_id=base.id,
            wheels_digest=wheels,
        )

    # -- everything --------------------------------------------------------------------------------
    def run(self, plan: BuildPlan, settings: BuildSettings) -> BuildReport:
        started = time.monotonic()
        self._results = []
        for skip in plan.skips:
            self._report(JobResult(skip.module, skip.platform.key, skip.platform.docker, "skipped", reason=skip.reason))
        local_wheels = self._prepare_wheels(plan, settings)
        wheels_seconds = time.monotonic() - started
        modules = plan.modules()
        with ThreadPoolExecutor(max_workers=min(self._jobs, max(1, len(modules)))) as pool:
            futures = [pool.submit(self._module, module, plan, settings, local_wheels) for module in modules]
            module_results = [future.result() for future in futures]
        self._state.save()
        with self._state_lock:
            jobs = list(self._results)
        return BuildReport(
            jobs=jobs, modules=module_results, seconds=time.monotonic() - started, wheels_seconds=wheels_seconds
        )
