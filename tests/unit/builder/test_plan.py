"""The build plan, requirements per platform, keys, decisions and the manifest list: pure logic."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from outpost.builder.index import ImageManifest, build_index, digest_of
from outpost.builder.inputs import tree_digest
from outpost.builder.modules import ModuleSpec
from outpost.builder.plan import BuildSettings, decide, job_key, plan_builds, remote_repository
from outpost.builder.platforms import PLATFORMS, parse_platforms, platform_named
from outpost.builder.requirements import requirements_for
from outpost.errors import InputError

AMD64, ARM64, ARMV7 = PLATFORMS


def _spec(tmp_path: Path, name: str = "m", **kw: object) -> ModuleSpec:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile").write_text("FROM scratch\n")
    (folder / "requirements.txt").write_text(
        'numpy==2.4.6; platform_machine != "armv7l"  # Debian\'s on armv7\npaho-mqtt==2.2.0\n'
    )
    dockerfiles = {p.key: folder / "Dockerfile" for p in PLATFORMS}
    fields: dict[str, object] = {
        "name": name,
        "folder": folder,
        "repository": f"outpost/{name}",
        "version": "1.0",
        "dockerfiles": dockerfiles,
        "context": folder,
    }
    fields.update(kw)
    return ModuleSpec(**fields)  # type: ignore[arg-type]


SETTINGS = BuildSettings(platforms=PLATFORMS, base_images={p.key: f"base:{p.debian}" for p in PLATFORMS})


def test_platform_names_in_every_vocabulary():
    assert platform_named("linux/arm/v7") is ARMV7
    assert platform_named("arm32v7") is ARMV7
    assert platform_named("armhf") is ARMV7
    assert platform_named("aarch64") is ARM64
    assert parse_platforms("linux/amd64, amd64,linux/arm64") == (AMD64, ARM64)
    with pytest.raises(InputError, match="unknown platform 'sparc'"):
        parse_platforms("sparc")
    assert "manylinux_2_17_armv7l" in ARMV7.wheel_tags()


def test_requirements_markers_are_evaluated_for_the_target(tmp_path):
    spec = _spec(tmp_path)
    path = spec.context / "requirements.txt"
    assert requirements_for(path, AMD64, "3.11") == ["numpy==2.4.6", "paho-mqtt==2.2.0"]
    assert requirements_for(path, ARMV7, "3.11") == ["paho-mqtt==2.2.0"]
    path.write_text("-r other.txt\n")
    with pytest.raises(InputError, match=r"requirements\.txt:1: -r is not supported"):
        requirements_for(path, AMD64, "3.11")
    path.write_text("numpy===\n")
    with pytest.raises(InputError, match="not a requirement"):
        requirements_for(path, AMD64, "3.11")


def test_plan_jobs_skips_and_tags(tmp_path):
    a = _spec(tmp_path, "a")
    b = _spec(tmp_path, "b", unsupported={"arm32v7": "no LiteRT wheel"})
    c = _spec(tmp_path, "c", dockerfiles={"amd64": tmp_path / "c" / "Dockerfile"})
    plan = plan_builds([a, b, c], dataclasses.replace(SETTINGS, registry="127.0.0.1:5000"))
    assert [j.name for j in plan.jobs] == ["a/amd64", "a/arm64v8", "a/arm32v7", "b/amd64", "b/arm64v8", "c/amd64"]
    assert [(s.module, s.platform.key) for s in plan.skips] == [("b", "arm32v7"), ("c", "arm64v8"), ("c", "arm32v7")]
    assert plan.skips[0].reason == "no LiteRT wheel"
    assert "no Dockerfile for arm64v8" in plan.skips[1].reason
    job = plan.jobs[2]
    assert job.local_tag == "outpost/a:1.0-arm32v7"
    assert job.remote_tag == "127.0.0.1:5000/outpost/a:1.0-arm32v7"
    assert job.base_image == "base:armhf"
    assert job.requirements == ("paho-mqtt==2.2.0",)
    assert plan.wheel_requirements["amd64"] == ("numpy==2.4.6", "paho-mqtt==2.2.0")
    assert plan.modules() == ["a", "b", "c"]


def test_missing_base_image_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="--base-image arm64v8=IMAGE"):
        plan_builds([_spec(tmp_path)], BuildSettings(platforms=(ARM64,), base_images={}))


def test_remote_repository_replaces_a_registry_host():
    assert remote_repository("127.0.0.1:5000", "outpost/x") == "127.0.0.1:5000/outpost/x"
    assert remote_repository("127.0.0.1:5000/", "localhost:5000/x") == "127.0.0.1:5000/x"
    assert remote_repository("r.io", "myacr.azurecr.io/team/x") == "r.io/team/x"


def test_job_key_changes_with_each_input_and_not_otherwise(tmp_path):
    job = plan_builds([_spec(tmp_path)], SETTINGS).jobs[0]
    inputs = {"context_digest": "c", "dockerfile_digest": "d", "base_image_id": "b", "wheels_digest": "w"}
    key = job_key(job, **inputs)
    assert key == job_key(job, **inputs)
    for name in inputs:
        assert job_key(job, **{**inputs, name: "other"}) != key
    other_platform = plan_builds([_spec(tmp_path)], SETTINGS).jobs[1]
    assert job_key(other_platform, **inputs) != key


def test_tree_digest_sees_content_names_and_mode_but_not_caches(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    first = tree_digest(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.pyc").write_bytes(b"junk")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "x.whl").write_bytes(b"w")
    assert tree_digest(tmp_path) == first
    (tmp_path / "a.py").chmod(0o755)
    assert tree_digest(tmp_path) != first
    (tmp_path / "a.py").chmod(0o644)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert tree_digest(tmp_path) != first


@pytest.mark.parametrize(
    ("local", "recorded_key", "recorded", "in_registry", "pushing", "build", "push"),
    [
        (None, None, None, None, True, True, True),  # nothing yet
        ("old", "old", "sha256:1", "sha256:1", True, True, True),  # inputs changed
        ("k", "k", "sha256:1", "sha256:1", True, False, False),  # no change at all
        (None, "k", "sha256:1", "sha256:1", True, False, False),  # fresh CI machine, record restored
        (None, "k", "sha256:1", None, True, True, True),  # ... but the registry lost it
        ("k", "k", "sha256:1", None, True, False, True),  # registry lost it, local image still there
        ("k", "old", "sha256:1", "sha256:1", True, False, True),  # built locally, not pushed yet
        ("k", None, None, None, True, False, True),  # built locally, never pushed
        ("k", None, None, None, False, False, False),  # local build only
        (None, None, None, None, False, True, False),
    ],
)
def test_decide(local, recorded_key, recorded, in_registry, pushing, build, push):  # noqa: PLR0917
    decision = decide(
        key="k",
        local_key=local,
        recorded_key=recorded_key,
        recorded_digest=recorded,
        registry_digest=in_registry,
        pushing=pushing,
    )
    assert (decision.build, decision.push) == (build, push)


def test_manifest_list_document_and_digest():
    images = [
        ImageManifest(AMD64, "sha256:" + "1" * 64, "application/vnd.docker.distribution.manifest.v2+json", 1000),
        ImageManifest(ARMV7, "sha256:" + "2" * 64, "application/vnd.docker.distribution.manifest.v2+json", 1001),
    ]
    content = build_index(images)
    doc = json.loads(content)
    assert doc["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert [m["platform"] for m in doc["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
    ]
    assert digest_of(content) == digest_of(build_index(images))
    assert digest_of(content).startswith("sha256:")


def test_a_module_may_name_its_own_base_image(tmp_path):
    hub = _spec(tmp_path, "hub", base_image="outpost/base-hub:bookworm-{debian}")
    jobs = plan_builds([hub], SETTINGS).jobs
    assert [j.base_image for j in jobs] == [
        "outpost/base-hub:bookworm-amd64",
        "outpost/base-hub:bookworm-arm64",
        "outpost/base-hub:bookworm-armhf",
    ]
