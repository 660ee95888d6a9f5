"""`outpost build` end to end: two reference modules x amd64, arm64, armv7 (QEMU), BuildKit, a real
registry on 127.0.0.1 with htpasswd auth (Debian's docker-registry), manifest lists, a digest-pinned
deployment the agent runs, a no-change rebuild, a broken module, and the credential refusals.

One cold build is shared by the tests of this file (module-scoped fixture). The modules are copies
of modules/alert-actuator and modules/motor-sensor under their own repositories (outpost-test/...),
with a per-session marker file, so each session really builds (BuildKit's layer cache keeps that
cheap on a machine that built them before) and never retags the images other tests use.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from integration.agent_harness import Device, manifest
from integration.agent_harness import module as behave_module
from integration.registry_harness import serve_registry

REPO = Path(__file__).resolve().parents[2]
OUTPOST = Path(sys.executable).parent / "outpost"
MODULES = ("alert-actuator", "motor-sensor")
PLATFORMS = {
    "linux/amd64": ("amd64", "", "x86_64"),
    "linux/arm64": ("arm64", "", "aarch64"),
    "linux/arm/v7": ("arm", "v7", "armv7l"),
}
USER = "builder"
PASSWORD = "pw-" + uuid.uuid4().hex
LIST_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"

# Emulated builds are slow on 2 shared cores: the cold build gets its own budget (see README: CI time).
pytestmark = pytest.mark.timeout(1800)


def _script(name: str, *args: str) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/services" / name), *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}{proc.stderr}"


@dataclass
class Registry:
    address: str
    root: Path

    def get(self, path: str, accept: str = LIST_TYPE, password: str = PASSWORD) -> requests.Response:
        return requests.get(
            f"http://{self.address}/v2/{path}", auth=(USER, password), headers={"Accept": accept}, timeout=30
        )


@dataclass
class Run:
    code: int
    doc: dict[str, Any]
    stderr: str
    seconds: float


@dataclass
class Workspace:
    root: Path
    modules: Path
    work: Path
    registry: Registry
    tag: str  # per-session marker

    def build(self, *args: str, password: str = PASSWORD, env: dict[str, str] | None = None) -> Run:
        full_env = {
            **os.environ,
            "OUTPOST_REGISTRY_USERNAME": USER,
            "OUTPOST_REGISTRY_PASSWORD": password,
            **(env or {}),
        }
        started = time.monotonic()
        proc = subprocess.run(
            [str(OUTPOST), "build", "--modules-dir", str(self.modules), "--work-dir", str(self.work), "--json", *args],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=full_env,
            timeout=1700,
            check=False,
        )
        seconds = time.monotonic() - started
        try:
            doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except ValueError:
            pytest.fail(f"outpost build printed no JSON:\n{proc.stdout}\n{proc.stderr}")
        return Run(proc.returncode, doc, proc.stderr, seconds)


TEMPLATE = {
    "$schema-template": "4.0.0",
    "modulesContent": {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {
                    "type": "docker",
                    "settings": {
                        "registryCredentials": {
                            "local": {
                                "username": "$CONTAINER_REGISTRY_USERNAME",
                                "password": "${CONTAINER_REGISTRY_PASSWORD}",
                                "address": "${CONTAINER_REGISTRY_SERVER}",
                            }
                        }
                    },
                },
                "systemModules": {},
                "modules": {},
            }
        },
        "$edgeHub": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "routes": {"alerts": "FROM /messages/modules/motor-sensor/outputs/* INTO $upstream"},
                "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
            }
        },
    },
}


def _template(address: str) -> dict[str, Any]:
    """iotedgedev-style template: the harness' hub and our two modules, by ${MODULES.name}."""
    doc = manifest({}, window=1.0)
    agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    template = json.loads(json.dumps(TEMPLATE))
    desired = template["modulesContent"]["$edgeAgent"]["properties.desired"]
    desired["systemModules"] = agent["systemModules"]
    desired["outpost"] = agent["outpost"]
    for name in MODULES:
        entry = behave_module(image="${MODULES.%s}" % name)  # noqa: UP031 - a literal placeholder
        entry.pop("outpost")  # no process fallback: these run only as the built images
        # No hub here: instead of connecting (and giving up after 10 s), each module imports its code
        # from the pulled image and stays up, so the agent's convergence does not race the SDK's timeout.
        create = json.loads(entry["settings"]["createOptions"])
        package = name.replace("-", "_")
        create["Cmd"] = ["python3", "-c", f"import {package}.main, outpost.sdk, time; time.sleep(3600)"]
        entry["settings"]["createOptions"] = json.dumps(create)
        entry["imagePullPolicy"] = "on-create"
        entry["restartPolicy"] = "never"
        desired["modules"][name] = entry
    return template


@pytest.fixture(scope="module")
def registry(docker_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("build-registry")
    with serve_registry(root, user=USER, password=PASSWORD, realm="outpost-build-tests") as address:
        yield Registry(address, root)


@pytest.fixture(scope="module")
def workspace(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Base images and emulation (cached across runs), and copies of the two modules."""
    started = time.monotonic()
    _script("qemu.sh")
    _script("base-images.sh")
    print(f"build setup (qemu, base images): {time.monotonic() - started:.1f} s")
    root = tmp_path_factory.mktemp("build-ws")
    marker = uuid.uuid4().hex[:8]
    for name in MODULES:
        dest = root / "modules" / name
        shutil.copytree(REPO / "modules" / name, dest, ignore=shutil.ignore_patterns("wheels", "__pycache__"))
        spec = json.loads((dest / "module.json").read_text())
        spec["image"]["repository"] = f"outpost-test/build-{name}"
        (dest / "module.json").write_text(json.dumps(spec, indent=2))
        (dest / "session.txt").write_text(marker)  # in the context, not in the image: a new key, cached layers
    (root / ".env").write_text(f"CONTAINER_REGISTRY_SERVER={registry.address}\nCONTAINER_REGISTRY_USERNAME={USER}\n")
    (root / "deployment.template.json").write_text(json.dumps(_template(registry.address), indent=2))
    return Workspace(root, root / "modules", root / "work", registry, marker)


@pytest.fixture(scope="module")
def cold(workspace: Workspace) -> Run:
    run = workspace.build(
        "--push",
        workspace.registry.address,
        "--template",
        "deployment.template.json",
        "-o",
        "out/deployment.json",
        "--revision",
        "test-" + workspace.tag,
        env={"CONTAINER_REGISTRY_PASSWORD": PASSWORD},
    )
    print(f"cold build of {len(MODULES)} modules x 3 platforms: {run.seconds:.1f} s")
    assert run.code == 0, run.stderr
    return run


def _images(run: Run) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["module"], i["platform"]): i for i in run.doc["images"]}


def test_cold_build_pushes_every_platform_and_a_manifest_list_per_module(cold, workspace):
    images = _images(cold)
    assert set(images) == {(m, p) for m in MODULES for p in PLATFORMS}
    assert all(i["status"] == "built" and i["pushed"] for i in images.values()), images
    assert PASSWORD not in cold.stderr + json.dumps(cold.doc)
    for module in cold.doc["modules"]:
        name = module["module"]
        repo = f"outpost-test/build-{name}"
        assert module["ok"]
        assert module["pushed"]
        assert module["image"] == f"{workspace.registry.address}/{repo}@{module['digest']}"
        response = workspace.registry.get(f"{repo}/manifests/0.1.0")
        assert response.status_code == 200
        assert response.headers["Docker-Content-Digest"] == module["digest"]
        listed = {
            (m["platform"]["architecture"], m["platform"].get("variant", "")): m["digest"]
            for m in response.json()["manifests"]
        }
        for platform, (arch, variant, _) in PLATFORMS.items():
            printed = images[(name, platform)]["digest"]
            assert listed[(arch, variant)] == printed, f"{name} {platform}"
            one = workspace.registry.get(
                f"{repo}/manifests/{printed}", accept="application/vnd.docker.distribution.manifest.v2+json"
            )
            assert one.status_code == 200


def test_images_carry_oci_provenance_labels(cold, docker_engine):
    for (module, platform), image in _images(cold).items():
        labels = docker_engine.images.get(image["tag"]).labels
        assert labels["org.opencontainers.image.title"] == module
        assert labels["org.opencontainers.image.version"] == "0.1.0"
        assert labels["org.opencontainers.image.created"].endswith("Z")
        assert labels["org.opencontainers.image.revision"].startswith("test-"), platform
        assert labels["outpost.build.key"]


def test_arm_images_pull_by_list_digest_and_run_under_emulation(cold, workspace, docker_engine):
    auth = {"username": USER, "password": PASSWORD}
    for module in cold.doc["modules"]:
        ref = module["image"]
        repository, digest = ref.split("@")
        for platform in ("linux/arm64", "linux/arm/v7"):
            arch, variant, machine = PLATFORMS[platform]
            docker_engine.images.pull(repository, tag=digest, platform=platform, auth_config=auth)
            image = docker_engine.images.get(ref)
            assert (image.attrs["Architecture"], image.attrs.get("Variant") or "") == (arch, variant)
            output = docker_engine.containers.run(
                ref,
                ["python3", "-c", "import platform; print(platform.machine())"],
                platform=platform,
                network_mode="none",
                remove=True,
            )
            assert output.decode().strip() == machine
            docker_engine.images.remove(ref, force=True)


def test_deployment_is_pinned_validated_private_and_the_agent_runs_it(cold, workspace, docker_engine, tmp_path):
    out = workspace.root / "out" / "deployment.json"
    assert cold.doc["deployment"] == "out/deployment.json"
    assert out.stat().st_mode & 0o777 == 0o600  # it carries the registry password
    doc = json.loads(out.read_text())
    desired = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    lists = {m["module"]: m["image"] for m in cold.doc["modules"]}
    for name in MODULES:
        assert desired["modules"][name]["settings"]["image"] == lists[name]
    creds = desired["runtime"]["settings"]["registryCredentials"]["local"]
    assert creds == {"username": USER, "password": PASSWORD, "address": workspace.registry.address}
    assert "$schema-template" not in doc
    check = subprocess.run(
        [str(OUTPOST), "manifest", "validate", str(out)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr

    for ref in lists.values():  # the device starts without them: the agent pulls by digest
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_engine.images.remove(ref, force=True)
    device = Device("docker", tmp_path, f"bld{uuid.uuid4().hex[:6]}")
    try:
        result = device.apply(doc, timeout=240)
        assert result.converged, result.description
        observed = device.observe().modules
        for name in MODULES:
            assert observed[name].image == lists[name]
            container = docker_engine.containers.get(observed[name].id)
            assert container.image.attrs["Architecture"] == "amd64"
    finally:
        device.cleanup()


def test_no_change_rebuild_builds_and_pushes_nothing(cold, workspace):
    run = workspace.build("--push", workspace.registry.address)
    print(f"no-change rebuild: {run.seconds:.2f} s wall, {run.doc.get('seconds')} s in the build")
    assert run.code == 0, run.stderr
    assert {(i["status"], i["pushed"]) for i in run.doc["images"]} == {("up-to-date", False)}
    assert not any(m["pushed"] for m in run.doc["modules"])
    assert [m["digest"] for m in run.doc["modules"]] == [m["digest"] for m in cold.doc["modules"]]


def test_a_broken_dockerfile_fails_its_module_and_leaves_the_registry_intact(cold, workspace):
    broken = workspace.modules / "broken-module"
    shutil.copytree(workspace.modules / "alert-actuator", broken)
    spec = json.loads((broken / "module.json").read_text())
    spec["image"]["repository"] = "outpost-test/build-broken"
    (broken / "module.json").write_text(json.dumps(spec))
    dockerfile = (broken / "Dockerfile").read_text().replace("USER nobody", "RUN no-such-build-tool --go\nUSER nobody")
    (broken / "Dockerfile").write_text(dockerfile)
    before = {m["module"]: m["digest"] for m in cold.doc["modules"]}

    run = workspace.build("--push", workspace.registry.address, "broken-module", *MODULES)
    assert run.code == 1
    results = {m["module"]: m for m in run.doc["modules"]}
    assert not results["broken-module"]["ok"]
    assert "no-such-build-tool" in results["broken-module"]["error"]
    assert "broken-module" in run.stderr
    assert "no-such-build-tool: not found" in run.stderr
    for name in MODULES:
        assert results[name]["ok"]
        assert results[name]["digest"] == before[name]
        response = workspace.registry.get(f"outpost-test/build-{name}/manifests/0.1.0")
        assert response.headers["Docker-Content-Digest"] == before[name]
    assert workspace.registry.get("outpost-test/build-broken/manifests/0.1.0").status_code == 404
    shutil.rmtree(broken)


def test_wrong_password_is_refused_without_echoing_it(cold, workspace):
    wrong = "not-the-" + PASSWORD
    run = workspace.build("--push", workspace.registry.address, "alert-actuator", password=wrong)
    assert run.code == 1
    text = run.stderr + json.dumps(run.doc)
    assert "refused" in text
    assert wrong not in text
    assert PASSWORD not in text


def test_credentials_file_must_be_private(cold, workspace):
    creds = workspace.root / "creds"
    creds.write_text(f"{USER}:{PASSWORD}\n")
    creds.chmod(0o644)
    run = workspace.build("--push", workspace.registry.address, "--registry-credentials", str(creds))
    assert run.code == 2
    assert "chmod 600" in run.stderr
    creds.chmod(0o600)
    run = workspace.build(
        "--push",
        workspace.registry.address,
        "--registry-credentials",
        str(creds),
        env={"OUTPOST_REGISTRY_USERNAME": ""},
    )
    assert run.code == 0, run.stderr
    assert base64.b64encode(PASSWORD.encode()).decode() not in run.stderr
