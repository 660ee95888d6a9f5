"""Image pruning on a real Docker engine: each module keeps its newest N images."""

from __future__ import annotations

import contextlib
import uuid

import docker
import pytest

from integration.agent_harness import IMAGE, Device, manifest, module


@pytest.fixture
def tags(docker_engine):
    names = [f"outpost-test/prune-{uuid.uuid4().hex[:6]}:{v}" for v in ("a", "b", "c")]
    image = docker_engine.images.get(IMAGE)
    for name in names:
        repo, tag = name.rsplit(":", 1)
        image.tag(repo, tag)
    yield names
    for name in names:
        with contextlib.suppress(docker.errors.ImageNotFound):  # already pruned by the agent under test
            docker_engine.images.remove(name)


def _present(client, name: str) -> bool:
    return any(name in (image.tags or []) for image in client.images.list())


def test_old_images_are_pruned_keeping_the_newest_per_module(docker_engine, tags, tmp_path):
    device = Device("docker", tmp_path, f"p{uuid.uuid4().hex[:6]}")
    try:
        for tag in tags:
            doc = manifest({"app": module(image=tag)}, window=0.2)
            doc["modulesContent"]["$edgeAgent"]["properties.desired"]["outpost"]["images"] = {"keepPerModule": 2}
            result = device.apply(doc)
            assert result.converged, result.description
        assert not _present(docker_engine, tags[0])  # oldest: pruned
        assert _present(docker_engine, tags[1])  # kept: newest two per module
        assert _present(docker_engine, tags[2])  # in use
        assert device.state.image_history()["app"] == tags[1:]
    finally:
        device.cleanup()
