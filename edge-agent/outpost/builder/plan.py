"""The build plan: which image to build for which module and platform, from what, tagged how.

Pure: it reads module folders (requirements, for the wheel sets) but talks to no engine or registry.
:func:`plan_builds` turns module specs and settings into jobs and skips; :func:`job_key` is a job's
input digest; :func:`decide` compares that key and what was recorded and observed to say whether a
job must be built and pushed. Called by :mod:`outpost.builder.runner`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from outpost.builder.inputs import digest_strings
from outpost.builder.modules import ModuleSpec
from outpost.builder.platforms import Platform
from outpost.builder.requirements import requirements_for
from outpost.errors import InputError

__all__ = [
    "BuildPlan",
    "BuildSettings",
    "Decision",
    "Job",
    "Skip",
    "decide",
    "job_key",
    "plan_builds",
    "remote_repository",
]

KEY_LABEL = "outpost.build.key"


@dataclass(frozen=True, slots=True)
class BuildSettings:
    """What the user asked for, resolved."""

    platforms: tuple[Platform, ...]
    base_images: Mapping[str, str]  # platform key -> base image reference
    registry: str | None = None  # push target: host[:port][/path]
    python_version: str = "3.11"
    base_arg: str = "BASE"  # the Dockerfiles' build argument naming their base image


@dataclass(frozen=True, slots=True)
class Job:
    """One image: a module built for a platform."""

    module: ModuleSpec
    platform: Platform
    dockerfile: Path
    base_image: str
    requirements: tuple[str, ...]  # the module's requirements for this platform
    local_tag: str  # repository:version-platform
    remote: str | None  # registry/repository, without tag, when pushing

    @property
    def name(self) -> str:
        return f"{self.module.name}/{self.platform.key}"

    @property
    def remote_tag(self) -> str | None:
        return f"{self.remote}:{self.module.tag(self.platform)}" if self.remote else None


@dataclass(frozen=True, slots=True)
class Skip:
    """A platform a module is not built for, and why (printed by the build)."""

    module: str
    platform: Platform
    reason: str


@dataclass(frozen=True, slots=True)
class BuildPlan:
    jobs: tuple[Job, ...]
    skips: tuple[Skip, ...]
    wheel_requirements: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # platform key -> union

    def modules(self) -> list[str]:
        return list(dict.fromkeys(job.module.name for job in self.jobs))

    def jobs_of(self, module: str) -> list[Job]:
        return [job for job in self.jobs if job.module.name == module]


def remote_repository(registry: str, repository: str) -> str:
    """``registry`` + the repository's path: a registry host already in the repository is replaced."""
    first, sep, rest = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        repository = rest
    return f"{registry.rstrip('/')}/{repository}"


def plan_builds(modules: list[ModuleSpec], settings: BuildSettings) -> BuildPlan:
    """Jobs for every module x platform the module supports; a skip, with its reason, for the rest."""
    jobs: list[Job] = []
    skips: list[Skip] = []
    union: dict[str, dict[str, None]] = {}
    for module in modules:
        for platform in settings.platforms:
            if platform.key in module.unsupported:
                skips.append(Skip(module.name, platform, module.unsupported[platform.key]))
                continue
            if platform.key not in module.dockerfiles:
                declared = ", ".join(module.dockerfiles) or "none"
                skips.append(
                    Skip(module.name, platform, f"module.json has no Dockerfile for {platform.key} (has: {declared})")
                )
                continue
            base = settings.base_images.get(platform.key)
            if module.base_image:
                base = module.base_image.format(debian=platform.debian, key=platform.key, arch=platform.architecture)
            if not base:
                raise InputError(f"no base image for {platform.docker}: pass --base-image {platform.key}=IMAGE")
            requirements = tuple(
                requirements_for(module.context / "requirements.txt", platform, settings.python_version)
            )
            union.setdefault(platform.key, {}).update(dict.fromkeys(requirements))
            jobs.append(
                Job(
                    module=module,
                    platform=platform,
                    dockerfile=module.dockerfiles[platform.key],
                    base_image=base,
                    requirements=requirements,
                    local_tag=f"{module.repository}:{module.tag(platform)}",
                    remote=remote_repository(settings.registry, module.repository) if settings.registry else None,
                )
            )
    return BuildPlan(tuple(jobs), tuple(skips), {k: tuple(v) for k, v in union.items()})


def job_key(job: Job, *, context_digest: str, dockerfile_digest: str, base_image_id: str, wheels_digest: str) -> str:
    """The digest of everything that decides the job's image (see :mod:`outpost.builder.inputs`)."""
    return digest_strings(
        [
            "outpost.build/1",
            job.platform.docker,
            context_digest,
            dockerfile_digest,
            str(job.dockerfile.relative_to(job.module.context))
            if job.dockerfile.is_relative_to(job.module.context)
            else str(job.dockerfile),
            base_image_id,
            wheels_digest,
            *job.module.build_options,
        ]
    )


@dataclass(frozen=True, slots=True)
class Decision:
    build: bool
    push: bool
    why: str


def decide(
    *,
    key: str,
    local_key: str | None,
    recorded_key: str | None,
    recorded_digest: str | None,
    registry_digest: str | None,
    pushing: bool,
) -> Decision:
    """Build when no image of these inputs exists, locally or (as last pushed) in the registry; push
    when the registry lacks the image of these inputs.

    ``recorded_*`` is what the build record says was last pushed to this tag; ``registry_digest`` what
    the registry has there now. A CI machine that starts without local images but with the record
    (restored from a cache) therefore rebuilds nothing that is already in the registry.
    """
    in_registry = pushing and recorded_key == key and recorded_digest is not None and registry_digest == recorded_digest
    if in_registry:
        return Decision(build=False, push=False, why="up to date")
    if local_key != key:
        why = "no local image" if local_key is None else "inputs changed"
        return Decision(build=True, push=pushing, why=why)
    if pushing:
        return Decision(build=False, push=True, why="not in the registry")
    return Decision(build=False, push=False, why="up to date")
