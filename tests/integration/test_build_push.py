"""`outpost build`'s image engine pushes from several threads at once: two modules' pushes overlap
in time on the real Docker engine, to a real registry on 127.0.0.1 with htpasswd auth, and each
image arrives under its own tag with the digest the engine reported.

The images are two `FROM scratch` images of one random 24 MB file each (random: gzip cannot shrink
it, so each push takes long enough to measure, and no layer is shared or already in the registry).
The times come from the engine's own progress callback: its first line arrives once the engine has
started that push, its digest once the push is done.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import docker
import pytest
import requests

from integration.registry_harness import serve_registry
from outpost.builder.adapters.docker_engine import DockerEngine
from outpost.builder.ports import Credentials

USER = "pusher"
PASSWORD = "pw-" + uuid.uuid4().hex
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
BLOB_BYTES = 24 * 1024 * 1024

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def registry(docker_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_registry(tmp_path_factory.mktemp("push-registry"), user=USER, password=PASSWORD) as address:
        yield address


def _context(blob: bytes) -> io.BytesIO:
    """A build context: a Dockerfile that copies ``blob`` into an empty image."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY blob /blob\n"), ("blob", blob)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture
def images(docker_engine: docker.DockerClient) -> Iterator[dict[str, str]]:
    """Two local images, name -> image id, under unique outpost-test/push-* tags (removed afterwards)."""
    marker = uuid.uuid4().hex[:8]
    built: dict[str, str] = {}
    try:
        for name in ("a", "b"):
            tag = f"outpost-test/push-{name}-{marker}:1"
            image, _ = docker_engine.images.build(
                fileobj=_context(os.urandom(BLOB_BYTES)), custom_context=True, tag=tag, network_mode="none", rm=True
            )
            built[tag] = image.id
        yield built
    finally:
        for image_id in built.values():
            docker_engine.images.remove(image_id, force=True)


@dataclass
class Push:
    """One thread's push, timed by the engine's progress lines (time.monotonic())."""

    local: str
    remote: str
    lines: list[tuple[float, str]] = field(default_factory=list)
    digest: str = ""
    error: BaseException | None = None

    @property
    def first(self) -> float:
        return self.lines[0][0]

    @property
    def last(self) -> float:
        return self.lines[-1][0]


def test_two_pushes_overlap_and_each_image_arrives_with_its_digest(docker_engine, registry, images):
    engine = DockerEngine()
    credentials = Credentials(USER, PASSWORD)
    pushes = [Push(tag, f"{registry}/{tag}") for tag in images]
    start = threading.Barrier(len(pushes))

    def push(job: Push) -> None:
        try:
            start.wait(timeout=30)
            assert engine.inspect(job.local) is not None
            engine.tag(job.local, job.remote)
            job.digest = engine.push(job.remote, credentials, lambda line: job.lines.append((time.monotonic(), line)))
        except BaseException as exc:  # reported below, with the other thread's outcome
            job.error = exc

    threads = [threading.Thread(target=push, args=(job,)) for job in pushes]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
    finally:
        engine.close()
    assert all(job.error is None for job in pushes), [job.error for job in pushes]
    a, b = pushes
    spans = {job.remote: (job.first, job.last) for job in pushes}
    # Each push was under way (its first line in) before the other one finished (its digest line in).
    overlap = min(a.last, b.last) - max(a.first, b.first)
    assert overlap > 0, f"pushes did not overlap: {spans}"
    print(f"two pushes of {BLOB_BYTES >> 20} MB layers overlapped for {overlap:.2f} s: {spans}")

    for job in pushes:
        assert PASSWORD not in "".join(line for _, line in job.lines)
        repository, _, tag = job.local.rpartition(":")
        response = requests.get(
            f"http://{registry}/v2/{repository}/manifests/{tag}",
            auth=(USER, PASSWORD),
            headers={"Accept": MANIFEST_TYPE},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.headers["Docker-Content-Digest"] == job.digest
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == job.digest
        # The manifest's config is the local image: the right image arrived under this tag.
        assert response.json()["config"]["digest"] == images[job.local]
        assert (
            f"{job.remote.rpartition(':')[0]}@{job.digest}" in docker_engine.images.get(job.remote).attrs["RepoDigests"]
        )
    assert a.digest != b.digest


def test_each_thread_opens_its_own_client_and_finished_threads_clients_are_closed(docker_engine):
    opened: list[tuple[str | None, docker.DockerClient]] = []
    closed: list[docker.DockerClient] = []

    class Recorded(docker.DockerClient):
        def close(self) -> None:
            closed.append(self)
            super().close()

    def connect(version: str | None) -> docker.DockerClient:
        client = Recorded.from_env(version=version, timeout=60)
        opened.append((version, client))
        return client

    engine = DockerEngine(connect)
    for _ in range(3):  # one after the other, as a build's thread pools come and go
        thread = threading.Thread(target=engine.inspect, args=("outpost/base:bookworm",))
        thread.start()
        thread.join()
    first = opened[0][1]
    # The first client asked the engine its API version; the threads' clients reuse it, without asking.
    assert [version for version, _ in opened] == [None] + [first.api.api_version] * 3
    assert len({id(client) for _, client in opened}) == 4
    # Opening a thread's client closed those of the threads that had finished.
    assert closed == [opened[1][1], opened[2][1]]
    engine.close()
    assert {id(client) for client in closed} == {id(client) for _, client in opened}
