"""Offline bundles down, on the real Docker engine: create on this machine, remove the images,
apply with no registry (none is reachable here), run; tampering and truncation refused before
anything changes; an arm64 bundle built on amd64 carries arm64 images and is refused by an amd64
engine. Images get unique tags per test and are removed first, so the engine does not have them."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from integration.agent_harness import IMAGE, Device, manifest, module

OUTPOST = str(Path(sys.executable).parent / "outpost")
ROOT = Path(__file__).resolve().parents[2]


def outpost(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OUTPOST, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def build(client: docker.DockerClient, tmp: Path, tag: str, *, base: str, note: str) -> None:
    """A small image on top of ``base`` with one unique layer (so its id is new to the engine)."""
    ctx = tmp / f"ctx-{uuid.uuid4().hex[:6]}"
    ctx.mkdir()
    (ctx / "unique.txt").write_text(note + uuid.uuid4().hex)
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY unique.txt /unique.txt\n")
    client.images.build(path=str(ctx), tag=tag, rm=True)


@pytest.fixture
def images(docker_engine, tmp_path):
    uid = uuid.uuid4().hex[:8]
    tags = [f"outpost-test/bundle-{uid}-{name}:1" for name in ("app", "hub")]
    made: list[str] = []

    def make(*extra: str) -> list[str]:
        for tag in [*tags, *extra]:
            build(docker_engine, tmp_path, tag, base=IMAGE, note=tag)
            made.append(tag)
        return tags

    yield make
    for tag in made:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_engine.images.remove(tag, force=True)


def member_offset(bundle: Path, name: str) -> tuple[int, int]:
    with tarfile.open(bundle) as tar:
        info = tar.getmember(name)
        return info.offset_data, info.size


@contextlib.contextmanager
def flipped(bundle: Path, offset: int):
    """The bundle with one byte flipped at ``offset`` (restored afterwards)."""
    with bundle.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
    try:
        yield
    finally:
        with bundle.open("r+b") as handle:
            handle.seek(offset)
            handle.write(byte)


def site_manifest(app: str, hub: str, model: Path, digest: str) -> dict[str, Any]:
    doc = manifest({"app": module(image=app, env={"BEHAVE_NAME": "app"})}, hub=module(order=0, image=hub), window=1.0)
    doc["modulesContent"]["app"] = {
        "properties.desired": {"threshold": 0.5, "model": {"version": "2", "path": str(model), "sha256": digest}}
    }
    return doc


def test_bundle_down_on_an_engine_without_the_images(docker_engine, images, tmp_path):
    app, hub = images()
    model = tmp_path / "device" / "models" / "motor-v2.tflite"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"TFL3" + uuid.uuid4().bytes * 64)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    (tmp_path / "site.json").write_text(json.dumps(site_manifest(app, hub, model, digest)))
    assert outpost("keys", "generate", "-o", str(tmp_path / "operator"), cwd=tmp_path).returncode == 0
    bundle = tmp_path / "site.tar"
    made = outpost("bundle", "create", "--manifest", str(tmp_path / "site.json"), "--platform", "linux/amd64",
                   "-o", str(bundle), "--sign-key", str(tmp_path / "operator.key"), "--json", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    index = json.loads(made.stdout)
    assert index["signed"] is True
    assert [i["ref"] for i in index["images"]] == [hub, app]  # edgeHub first (system module), then modules
    assert all(i["platform"] == "linux/amd64" for i in index["images"])
    all_layers = [layer for i in index["images"] for layer in i["layers"]]
    assert len(set(all_layers)) < len(all_layers)  # the shared base layers ...
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert len([n for n in names if n.startswith("blobs/")]) == len(set(all_layers)) + 2 + 1  # ... stored once
    assert names[:4] == ["outpost-bundle.json", "outpost-bundle.sig", "SHA256SUMS", "content.json"]
    assert index["models"][0]["sha256"] == digest
    assert index["twins"] == ["app"]

    # The site: the engine does not have the images, the model file is not there, a trust root is set.
    for tag in (app, hub):
        docker_engine.images.remove(tag, force=True)
    model.unlink()
    state = ["--state-dir", str(tmp_path / "state")]
    assert outpost("agent", "trust", "add", str(tmp_path / "operator.pub"), *state, cwd=tmp_path).returncode == 0
    ns = f"b{uuid.uuid4().hex[:6]}"
    device = Device("docker", tmp_path, ns)
    try:
        done = outpost("bundle", "apply", str(bundle), *state, "--namespace", ns, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["converged"] is True
        assert result["signer"] == result["contentSigner"]
        assert sorted(result["images"]) == sorted([app, hub])
        assert model.read_bytes()
        assert hashlib.sha256(model.read_bytes()).hexdigest() == digest
        for entry in index["images"]:
            assert docker_engine.images.get(entry["ref"]).id == entry["id"]
        running = device.running()
        assert set(running) == {"app", "edgeHub"}

        # Tampering and truncation: refused with the reason, and what runs is not touched.
        refusals = {}
        for name, where in (("content.json", 40), ("outpost-bundle.sig", 20)):
            offset, _ = member_offset(bundle, name)
            with flipped(bundle, offset + where):
                refusals[name] = outpost("bundle", "apply", str(bundle), *state, "--namespace", ns, cwd=tmp_path)
        layer = index["images"][1]["layers"][-1]
        offset, size = member_offset(bundle, f"blobs/sha256/{layer}")
        with flipped(bundle, offset + size // 2):
            refusals["layer"] = outpost("bundle", "apply", str(bundle), *state, "--namespace", ns, cwd=tmp_path)
        offset, size = member_offset(bundle, f"blobs/sha256/{digest}")
        with flipped(bundle, offset + size - 1):
            refusals["model"] = outpost("bundle", "apply", str(bundle), *state, "--namespace", ns, cwd=tmp_path)
        short = tmp_path / "short.tar"
        with bundle.open("rb") as src, short.open("wb") as dst:
            dst.write(src.read(bundle.stat().st_size * 2 // 3))
        refusals["truncated"] = outpost("bundle", "apply", str(short), *state, "--namespace", ns, cwd=tmp_path)
        reasons = {
            "content.json": "content.json: sha256",
            "outpost-bundle.sig": "outpost-bundle.sig: malformed",
            "layer": f"blobs/sha256/{layer}: sha256",
            "model": f"blobs/sha256/{digest}: sha256",
            "truncated": "truncated",
        }
        for case, result_ in refusals.items():
            assert result_.returncode == 1, (case, result_.stderr)
            assert "refused" in result_.stderr, case
            assert reasons[case] in result_.stderr.replace("\n", ""), (case, result_.stderr)
        assert device.running() == running
        # The last refusal is in the agent's status document too; what runs is still reported as running.
        status = json.loads((tmp_path / "state" / "status.json").read_text())
        assert status["lastDesiredStatus"]["code"] == 400
        assert "truncated" in status["lastDesiredStatus"]["description"]
        assert status["outpost"]["refusal"]["source"] == f"bundle {short}"
        assert status["outpost"]["deploymentId"] == result["deployment"]
    finally:
        device.cleanup()


def test_signature_flip_and_unknown_key_are_refused(docker_engine, images, tmp_path):
    """A flipped byte inside the signature value (valid JSON, wrong signature), and a bundle signed by
    a key the device does not trust, are refused before verification of the files even starts."""
    app, hub = images()
    doc = manifest({"app": module(image=app)}, hub=module(order=0, image=hub))
    (tmp_path / "site.json").write_text(json.dumps(doc))
    for name in ("operator", "stranger"):
        assert outpost("keys", "generate", "-o", str(tmp_path / name), cwd=tmp_path).returncode == 0
    bundle = tmp_path / "site.tar"
    made = outpost("bundle", "create", "--manifest", str(tmp_path / "site.json"), "-o", str(bundle),
                   "--sign-key", str(tmp_path / "stranger.key"), cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "wrote" in made.stderr
    state = ["--state-dir", str(tmp_path / "state")]
    assert outpost("agent", "trust", "add", str(tmp_path / "operator.pub"), *state, cwd=tmp_path).returncode == 0
    unknown = outpost("bundle", "verify", str(bundle), *state, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "does not trust" in unknown.stderr

    assert outpost("agent", "trust", "add", str(tmp_path / "stranger.pub"), *state, cwd=tmp_path).returncode == 0
    assert outpost("bundle", "verify", str(bundle), *state, cwd=tmp_path).returncode == 0
    offset, _size = member_offset(bundle, "outpost-bundle.sig")
    with tarfile.open(bundle) as tar:
        raw = tar.extractfile("outpost-bundle.sig").read()  # type: ignore[union-attr]
    at = raw.index(b'"sig": "') + len(b'"sig": "') + 5  # a base64 character of the signature value
    with bundle.open("r+b") as handle:
        handle.seek(offset + at)
        handle.write(b"A" if raw[at : at + 1] != b"A" else b"B")
    changed = outpost("bundle", "verify", str(bundle), *state, cwd=tmp_path)
    assert changed.returncode == 1
    assert "changed after signing" in changed.stderr


def test_arm64_bundle_built_on_amd64_carries_arm64_images(docker_engine, tmp_path):
    uid = uuid.uuid4().hex[:8]
    tag = f"outpost-test/bundle-arm-{uid}:1"
    ctx = tmp_path / "arm"
    ctx.mkdir()
    (ctx / "hello.txt").write_text(uid)
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY hello.txt /hello.txt\nCMD ["/hello"]\n')
    built = subprocess.run(["/usr/bin/docker", "build", "-q", "--platform", "linux/arm64", "-t", tag, str(ctx)],
                           env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                           check=False, timeout=120)  # fmt: skip
    assert built.returncode == 0, built.stderr
    try:
        doc = manifest({"app": module(image=tag)}, hub=module(order=0, image=tag))
        (tmp_path / "arm.json").write_text(json.dumps(doc))
        bundle = tmp_path / "arm.tar"
        wrong = outpost("bundle", "create", "--manifest", str(tmp_path / "arm.json"), "--platform", "linux/amd64",
                        "-o", str(bundle), cwd=tmp_path)  # fmt: skip
        assert wrong.returncode == 1
        assert "is linux/arm64, not linux/amd64" in wrong.stderr.replace("\n", "")
        assert not bundle.exists()
        made = outpost("bundle", "create", "--manifest", str(tmp_path / "arm.json"), "--platform", "linux/arm64",
                       "-o", str(bundle), "--json", cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        index = json.loads(made.stdout)
        assert index["platform"] == "linux/arm64"
        assert [i["platform"] for i in index["images"]] == ["linux/arm64"]
        with tarfile.open(bundle) as tar:
            config = json.load(io.BytesIO(tar.extractfile(f"blobs/sha256/{index['images'][0]['config']}").read()))  # type: ignore[union-attr]
        assert (config["os"], config["architecture"]) == ("linux", "arm64")
        docker_engine.images.remove(tag, force=True)
        state = ["--state-dir", str(tmp_path / "state")]
        assert outpost("bundle", "verify", str(bundle), *state, cwd=tmp_path).returncode == 0
        refused = outpost("bundle", "apply", str(bundle), *state, "--namespace", f"a{uid[:6]}", cwd=tmp_path)
        assert refused.returncode == 1
        assert "for linux/arm64, but this engine runs linux/amd64" in refused.stderr.replace("\n", "")
        with pytest.raises(docker.errors.ImageNotFound):
            docker_engine.images.get(tag)  # nothing was loaded
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_engine.images.remove(tag, force=True)
        shutil.rmtree(ctx, ignore_errors=True)


def test_bundle_of_a_signed_fleet_deployment(docker_engine, images, tmp_path):
    """`bundle create --deployment NAME --fleet URL`: the base deployment's content with the signature
    made at `deploy push --sign-key`, applied on a device that trusts the operator; a layered
    deployment is not a whole manifest and is refused."""
    from integration.fleet_harness import FleetProcess

    app, hub = images()
    doc = manifest({"app": module(image=app)}, hub=module(order=0, image=hub), window=1.0)
    (tmp_path / "site.json").write_text(json.dumps(doc))
    layer = {"modulesContent": {"$edgeAgent": {"properties.desired.modules.more": module(order=2, image=app)}}}
    (tmp_path / "layer.json").write_text(json.dumps(layer))
    for name in ("operator", "packer"):
        assert outpost("keys", "generate", "-o", str(tmp_path / name), cwd=tmp_path).returncode == 0
    fleet = FleetProcess(tmp_path / "fleet").start()
    bundle = tmp_path / "site.tar"
    try:
        conn = ["--fleet", fleet.url, "--token", fleet.token]
        for name, extra in (("site", []), ("layer", ["--layered"])):
            pushed = outpost("deploy", "push", str(tmp_path / f"{name}.json"), "--name", name, "--target", "*",
                             "--sign-key", str(tmp_path / "operator.key"), *extra, *conn, cwd=tmp_path)  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr
        with fleet.client() as operator:
            pushed_signatures = operator.get("/api/v1/deployments/site").json()["signatures"]
        refused = outpost(
            "bundle", "create", "--deployment", "layer", *conn, "-o", str(tmp_path / "l.tar"), cwd=tmp_path
        )
        assert refused.returncode == 1
        assert "layered deployment" in refused.stderr
        # the bundle's index is signed by whoever packs it (here another key); the content keeps the push's signature
        made = outpost("bundle", "create", "--deployment", "site", *conn, "-o", str(bundle), "--json",
                       "--sign-key", str(tmp_path / "packer.key"), cwd=tmp_path)  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["deployment"] == "site"
    finally:
        fleet.stop()
    with tarfile.open(bundle) as tar:
        content = json.load(tar.extractfile("content.json"))  # type: ignore[arg-type]
    assert pushed_signatures[0] in content["outpost"]["signatures"]
    for tag in (app, hub):
        docker_engine.images.remove(tag, force=True)
    state = ["--state-dir", str(tmp_path / "state")]
    for name in ("operator", "packer"):
        assert outpost("agent", "trust", "add", str(tmp_path / f"{name}.pub"), *state, cwd=tmp_path).returncode == 0
    ns = f"f{uuid.uuid4().hex[:6]}"
    device = Device("docker", tmp_path, ns)
    try:
        done = outpost("bundle", "apply", str(bundle), *state, "--namespace", ns, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["converged"] is True
        assert {result["signer"], result["contentSigner"]} == {
            pushed_signatures[0]["keyId"],
            outpost("keys", "id", str(tmp_path / "packer.pub"), cwd=tmp_path).stdout.strip(),
        }
        assert set(device.running()) == {"app", "edgeHub"}
    finally:
        device.cleanup()


@pytest.fixture
def open_registry(docker_engine, tmp_path):
    """Debian's docker-registry on 127.0.0.1 (no auth: only this test's engine reaches loopback)."""
    setup = subprocess.run(["bash", str(ROOT / "scripts/services/registry.sh")], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    root = tmp_path / "registry"
    root.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("w")
    server = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log)
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
        log.close()


def test_digest_pinned_images_resolve_after_apply_on_an_engine_without_them(docker_engine, images, open_registry,
                                                                             tmp_path):  # fmt: skip
    """Docker 20.10 drops repository digests on `docker load`: the bundle loads a digest-pinned image under
    NAME:sha256-HEX, pins the digest to the image id its signed index names, and the agent runs that image;
    the device requires digests and no registry is reachable at apply time."""
    address, server = open_registry
    app, hub = images()
    pinned = {}
    for name, tag in (("app", app), ("hub", hub)):
        repo = f"{address}/outpost-test/pin-{name}-{uuid.uuid4().hex[:6]}"
        docker_engine.images.get(tag).tag(repo, "1")
        deadline = time.monotonic() + 30
        while True:
            pushed = docker_engine.images.push(repo, "1")
            if '"error"' not in pushed or time.monotonic() > deadline:
                break
            time.sleep(0.3)  # the registry is still starting
        assert '"error"' not in pushed, pushed
        digests = docker_engine.images.get(f"{repo}:1").attrs["RepoDigests"]
        pinned[name] = next(d for d in digests if d.startswith(repo + "@"))
    doc = manifest({"app": module(image=pinned["app"])}, hub=module(order=0, image=pinned["hub"]), window=1.0)
    (tmp_path / "site.json").write_text(json.dumps(doc))
    assert outpost("keys", "generate", "-o", str(tmp_path / "operator"), cwd=tmp_path).returncode == 0
    bundle = tmp_path / "site.tar"
    made = outpost("bundle", "create", "--manifest", str(tmp_path / "site.json"), "-o", str(bundle), "--json",
                   "--sign-key", str(tmp_path / "operator.key"), cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    index = json.loads(made.stdout)
    assert sorted(i["ref"] for i in index["images"]) == sorted(pinned.values())
    ids = {i["ref"]: i["id"] for i in index["images"]}

    server.terminate()  # the site has no registry
    server.wait(timeout=10)
    for ref in pinned.values():
        docker_engine.images.remove(ids[ref], force=True)  # every tag and digest of it: the engine has none
    for ref in pinned.values():
        with pytest.raises(docker.errors.ImageNotFound):
            docker_engine.images.get(ref)
    state = ["--state-dir", str(tmp_path / "state")]
    assert outpost("agent", "trust", "add", str(tmp_path / "operator.pub"), *state, cwd=tmp_path).returncode == 0
    assert outpost("agent", "trust", "policy", "--require-digests", *state, cwd=tmp_path).returncode == 0
    ns = f"p{uuid.uuid4().hex[:6]}"
    device = Device("docker", tmp_path, ns)
    try:
        done = outpost("bundle", "apply", str(bundle), *state, "--namespace", ns, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["converged"] is True
        assert json.loads((tmp_path / "state" / "image-pins.json").read_text()) == ids
        for name, container in (("app", f"{ns}-app"), ("hub", f"{ns}-edgeHub")):
            assert docker_engine.containers.get(container).image.id == ids[pinned[name]]
        assert set(device.running()) == {"app", "edgeHub"}
    finally:
        device.cleanup()
        for ref in pinned.values():
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_engine.images.remove(ids[ref], force=True)
