"""Pulls through a real registry (Debian's docker-registry on 127.0.0.1, htpasswd auth):
registryCredentials, imagePullPolicy on-create, and download-then-kill on updates."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from integration.agent_harness import IMAGE, Device, manifest, module

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "fleet", "s3cret-" + uuid.uuid4().hex[:8]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def registry(docker_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry on 127.0.0.1 that demands a password, holding app:1 and app:2; yields its address."""
    setup = subprocess.run(
        ["bash", str(REPO / "scripts/services/registry.sh")], capture_output=True, text=True, check=False
    )
    assert setup.returncode == 0, setup.stderr
    root = tmp_path_factory.mktemp("registry")
    subprocess.run(["htpasswd", "-Bbc", str(root / "htpasswd"), USER, PASSWORD], check=True, capture_output=True)
    port = _free_port()
    (root / "config.yml").write_text(
        f"""version: 0.1
storage:
  filesystem:
    rootdirectory: {root / "data"}
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: outpost-tests
    path: {root / "htpasswd"}
"""
    )
    log = (root / "registry.log").open("w")
    server = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                docker_engine.login(username=USER, password=PASSWORD, registry=address, reauth=True)
                break
            except docker.errors.APIError:
                time.sleep(0.2)
        auth = {"username": USER, "password": PASSWORD}
        for version in ("1", "2"):
            image = docker_engine.images.get(f"outpost-test/behave:{version}")
            image.tag(f"{address}/outpost/app", version)
            docker_engine.images.push(f"{address}/outpost/app", version, auth_config=auth)
            docker_engine.images.remove(f"{address}/outpost/app:{version}")  # devices start without it
        yield address
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _registry_manifest(address: str, tag: str, password: str = PASSWORD) -> dict:
    doc = manifest({"app": module(image=f"{address}/outpost/app:{tag}")}, window=0.5)
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["app"]["imagePullPolicy"] = "on-create"
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"] = {
        "local": {"username": USER, "password": password, "address": address}
    }
    return doc


def _drop(client: docker.DockerClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.remove(ref, force=True)


def test_pull_with_credentials_then_update_and_a_missing_tag_leaves_the_old_version_running(
    docker_engine, registry, tmp_path
):
    device = Device("docker", tmp_path, f"reg{uuid.uuid4().hex[:6]}")
    try:
        result = device.apply(_registry_manifest(registry, "1"))
        assert result.converged, result.description
        first = device.observe().modules["app"]
        assert first.running
        assert first.image == f"{registry}/outpost/app:1"

        result = device.apply(_registry_manifest(registry, "2"))
        assert result.converged, result.description
        second = device.observe().modules["app"]
        assert second.id != first.id
        assert docker_engine.images.get(f"{registry}/outpost/app:2").labels["outpost.test.image-version"] == "2"

        # download-then-kill: a tag the registry lacks fails at the pull, before v2 is stopped
        result = device.apply(_registry_manifest(registry, "9"))
        assert not result.converged
        assert "could not pull" in result.description
        third = device.observe().modules["app"]
        assert third.id == second.id
        assert third.running
    finally:
        device.cleanup()
        for tag in ("1", "2"):
            _drop(docker_engine, f"{registry}/outpost/app:{tag}")


def test_wrong_registry_password_is_reported_and_nothing_starts(docker_engine, registry, tmp_path):
    device = Device("docker", tmp_path, f"reg{uuid.uuid4().hex[:6]}")
    try:
        result = device.apply(_registry_manifest(registry, "1", password="wrong"), rollback=False)
        assert not result.converged
        assert "app" in result.failures
        assert "could not pull" in result.failures["app"]
        assert "app" not in device.running()
        assert IMAGE  # the local test image is untouched
    finally:
        device.cleanup()
