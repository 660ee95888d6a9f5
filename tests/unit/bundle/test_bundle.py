"""Bundles without Docker: model references, the index, Docker's archive taken apart and put back,
create + verify over a small fake engine, and every refusal of verify."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost.bundle.adapters.fetch import open_source
from outpost.bundle.archive import join, split
from outpost.bundle.blobs import BlobDir
from outpost.bundle.create import create_bundle
from outpost.bundle.engine import ImageInfo
from outpost.bundle.layout import BundleError, Index, load_tag
from outpost.bundle.models import file_refs
from outpost.bundle.verify import verify_bundle
from outpost.trust.keys import generate, read_private, read_public

ROOT = Path(__file__).resolve().parents[3]


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return out.getvalue()


def saved_image(layers: list[bytes], arch: str = "amd64", *, link_last: bool = False) -> bytes:
    """A ``docker save`` archive of one image with these layer tars (the last one as a symlink)."""
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = json.dumps({"os": "linux", "architecture": arch, "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    config_name = hashlib.sha256(config.encode()).hexdigest() + ".json"
    members = {config_name: config.encode()}
    names = [f"l{i}/layer.tar" for i in range(len(layers))]
    links = {}
    for i, (name, layer) in enumerate(zip(names, layers, strict=True)):
        if link_last and i == len(layers) - 1 and layer in layers[:-1]:
            links[name] = f"../l{layers.index(layer)}/layer.tar"
        else:
            members[name] = layer
    manifest = [{"Config": config_name, "RepoTags": ["x:1"], "Layers": names}]
    members["manifest.json"] = json.dumps(manifest).encode()
    return _tar(members, links)


class FakeEngine:
    """Images as ``docker save`` bytes by ref (pure-logic tests; the real engine is in integration)."""

    def __init__(self, images: dict[str, bytes], platform: str = "linux/amd64") -> None:
        self.images = images
        self._platform = platform

    def platform(self) -> str:
        return self._platform

    def inspect(self, ref: str) -> ImageInfo | None:
        if ref not in self.images:
            return None
        with tarfile.open(fileobj=io.BytesIO(self.images[ref])) as tar:
            name = next(n for n in tar.getnames() if n.endswith(".json") and n != "manifest.json")
            config = json.loads(tar.extractfile(name).read())  # type: ignore[union-attr]
        return ImageInfo(f"sha256:{name[:-5]}", f"linux/{config['architecture']}", len(self.images[ref]))

    def save(self, ref: str) -> Iterator[bytes]:
        data = self.images[ref]
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    def load(self, archive: Path) -> None:
        raise AssertionError(f"not used ({archive})")


def test_model_references_and_where_they_go():
    doc = {"modulesContent": {
        "$edgeAgent": {"properties.desired": {}},
        "det": {"properties.desired": {"model": {"version": "2", "url": "http://127.0.0.1:8/m.tflite",
                                                  "sha256": "ab" * 32, "metadataUrl": "file:///srv/m.json"},
                                        "old": [{"path": "/var/lib/outpost/models/a~b.tflite"}]}},
    }}  # fmt: skip
    refs = {r.pointer: r for r in file_refs(doc)}
    base = "/modulesContent/det/properties.desired"
    assert set(refs) == {f"{base}/model/url", f"{base}/model/metadataUrl", f"{base}/old/0/path"}
    assert refs[f"{base}/model/url"].sha256 == "ab" * 32
    assert refs[f"{base}/model/url"].target is None  # http: into the models dir
    assert refs[f"{base}/model/metadataUrl"].sha256 is None
    assert refs[f"{base}/model/metadataUrl"].target == "/srv/m.json"
    assert refs[f"{base}/old/0/path"].target == "/var/lib/outpost/models/a~b.tflite"


def test_split_stores_shared_layers_once_and_join_puts_them_back(tmp_path):
    blobs = BlobDir(tmp_path / "b")
    base, top = b"base" * 100, b"top"
    one = split("a:1", [saved_image([base, top])], blobs, size=0)
    two = split("b:1", [saved_image([base, b"other", base], link_last=True)], blobs, size=0)
    assert one.layers[0] == two.layers[0] == two.layers[2] == hashlib.sha256(base).hexdigest()
    assert one.platform == "linux/amd64"
    assert len(list((tmp_path / "b" / "blobs" / "sha256").iterdir())) == 2 + 3  # 2 configs, 3 distinct layers
    out = io.BytesIO()
    join([one, two], blobs, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layer_names = [n for n in tar.getnames() if n.endswith("layer.tar")]
    assert [m["RepoTags"] for m in manifest] == [["a:1"], ["b:1"]]
    assert len(layer_names) == 3


def test_split_refuses_layers_that_do_not_match_the_config(tmp_path):
    data = saved_image([b"x"]).replace(b"manifest.json", b"manifest.json")
    broken = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=broken, mode="w") as dst:
        for member in src.getmembers():
            payload = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("layer.tar"):
                payload = b"y"
            member.size = len(payload)
            dst.addfile(member, io.BytesIO(payload))
    with pytest.raises(BundleError, match="diff ids"):
        split("x:1", [broken.getvalue()], BlobDir(tmp_path), size=0)


def manifest(images: dict[str, str]) -> dict[str, Any]:
    doc = json.loads((ROOT / "manifests" / "motor-monitor.json").read_text())
    agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    agent["systemModules"]["edgeHub"]["settings"]["image"] = images["hub"]
    for spec in agent["modules"].values():
        spec["settings"]["image"] = images["app"]
    doc["modulesContent"]["anomaly-detector"]["properties.desired"]["model"]["path"] = "/nonexistent/m.tflite"
    return doc


@pytest.fixture
def made(tmp_path):
    engine = FakeEngine({"hub:1": saved_image([b"base" * 50, b"hub"]), "app:1": saved_image([b"base" * 50, b"app"])})
    generate(tmp_path / "op")
    generate(tmp_path / "other")
    created = create_bundle(
        manifest({"hub": "hub:1", "app": "app:1"}), platform="linux/amd64", output=tmp_path / "b.tar",
        engine=engine, opener=open_source, sign_key=read_private(tmp_path / "op.key"),
    )  # fmt: skip
    return tmp_path, created


def trusted(tmp_path: Path, name: str = "op") -> dict[str, Any]:
    from outpost.trust.keys import key_id

    key = read_public(tmp_path / f"{name}.pub")
    return {key_id(key): key}


def test_create_then_verify(made):
    tmp_path, created = made
    assert any("not on this machine" in w for w in created.warnings)  # model path inside the image: noted
    verified = verify_bundle(created.path, trusted=trusted(tmp_path), staging=BlobDir(tmp_path / "s"))
    assert verified.signer
    assert verified.content["outpost"]["signatures"]  # the content is signed too
    assert [i.ref for i in verified.index.images] == ["hub:1", "app:1"]
    unchecked = verify_bundle(created.path, trusted={}, staging=BlobDir(tmp_path / "s2"))
    assert "no trust root" in unchecked.note


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None], extra: dict[str, bytes] | None = None) -> None:
    with tarfile.open(src) as old, tarfile.open(dst, "w") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read()  # type: ignore[union-attr]
            if member.name in change:
                replaced = change[member.name]
                if replaced is None:
                    continue
                data = replaced
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))


def test_verify_refusals(made):
    tmp_path, created = made
    keys = trusted(tmp_path)
    with tarfile.open(created.path) as tar:
        index = json.loads(tar.extractfile("outpost-bundle.json").read())  # type: ignore[union-attr]
    cases = {
        "not listed in the bundle's index": ({}, {"blobs/sha256/" + "0" * 64: b"x"}),
        "missing": ({"content.json": None}, None),
        "not in canonical form": ({"outpost-bundle.json": json.dumps(index, indent=1).encode()}, None),
        "changed after signing": (
            {"outpost-bundle.json": json.dumps(dict(index, deployment="evil"), sort_keys=True,
                                               separators=(",", ":")).encode()}, None),
        "unsigned bundle refused": ({"outpost-bundle.sig": b'{"signatures": []}'}, None),
    }  # fmt: skip
    for reason, (change, extra) in cases.items():
        bad = tmp_path / "bad.tar"
        _rewrite(created.path, bad, change, extra)
        root = {} if reason == "not in canonical form" else keys  # (with keys, the signature fails first)
        with pytest.raises(BundleError, match=reason):
            verify_bundle(bad, trusted=root, staging=BlobDir(tmp_path / f"s-{len(reason)}"))
    with pytest.raises(BundleError, match="does not trust"):
        verify_bundle(created.path, trusted=trusted(tmp_path, "other"), staging=BlobDir(tmp_path / "s-o"))

    def arm_only(index: Index) -> None:
        raise BundleError(f"this bundle is for {index.platform}")

    with pytest.raises(BundleError, match="for linux/amd64"):
        verify_bundle(created.path, trusted=keys, staging=BlobDir(tmp_path / "s-p"), check_index=arm_only)
    (tmp_path / "junk.tar").write_bytes(b"\0" * 100)
    with pytest.raises(BundleError, match=r"truncated or damaged|not an outpost bundle"):
        verify_bundle(tmp_path / "junk.tar", trusted=keys, staging=BlobDir(tmp_path / "s-j"))


def test_create_refuses_missing_and_foreign_platform_images(tmp_path):
    engine = FakeEngine({"arm:1": saved_image([b"a"], arch="arm64")})
    common = {"output": tmp_path / "o.tar", "engine": engine, "opener": open_source}
    with pytest.raises(BundleError, match="is linux/arm64, not linux/amd64"):
        create_bundle(manifest({"hub": "arm:1", "app": "arm:1"}), platform="linux/amd64", **common)
    with pytest.raises(BundleError, match="not in this engine"):
        create_bundle(manifest({"hub": "arm:1", "app": "nope:1"}), platform="linux/arm64", **common)
    with pytest.raises(BundleError, match="not in this engine"):  # a digest is packed when the engine has it
        create_bundle(manifest({"hub": "arm:1", "app": "x@sha256:" + "a" * 64}), platform="linux/arm64", **common)
    assert not (tmp_path / "o.tar").exists()


def test_model_files_from_loopback_urls_are_packed_and_checked(tmp_path):
    import http.server
    import threading

    (tmp_path / "www").mkdir()
    model = b"TFL3" + b"\x01" * 500
    (tmp_path / "www" / "m.tflite").write_bytes(model)
    (tmp_path / "meta.json").write_text('{"features": []}')
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "www"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        engine = FakeEngine({"a:1": saved_image([b"a"])})
        doc = manifest({"hub": "a:1", "app": "a:1"})
        url = f"http://127.0.0.1:{server.server_address[1]}/m.tflite"
        doc["modulesContent"]["anomaly-detector"]["properties.desired"]["model"] = {
            "version": "2", "url": url, "sha256": hashlib.sha256(model).hexdigest(),
            "metadataUrl": (tmp_path / "meta.json").as_uri(),
        }  # fmt: skip
        created = create_bundle(doc, platform="linux/amd64", output=tmp_path / "b.tar", engine=engine,
                                opener=open_source)  # fmt: skip
        assert {(m.source, m.target) for m in created.index.models} == {
            (url, None),
            ((tmp_path / "meta.json").as_uri(), str(tmp_path / "meta.json")),
        }
        doc["modulesContent"]["anomaly-detector"]["properties.desired"]["model"]["sha256"] = "0" * 64
        with pytest.raises(BundleError, match="but the twin says"):
            create_bundle(doc, platform="linux/amd64", output=tmp_path / "c.tar", engine=engine, opener=open_source)
        doc["modulesContent"]["anomaly-detector"]["properties.desired"]["model"]["url"] = "http://192.0.2.1/m.tflite"
        with pytest.raises(BundleError, match="only loopback hosts"):
            create_bundle(doc, platform="linux/amd64", output=tmp_path / "c.tar", engine=engine, opener=open_source)
        assert not (tmp_path / "c.tar").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_apply_refuses_a_model_target_the_content_does_not_name(tmp_path):
    from outpost.bundle.apply import apply_bundle
    from outpost.trust.admission import Admitted
    from outpost.trust.canonical import canonical_bytes

    (tmp_path / "m.bin").write_bytes(b"model")
    engine = FakeEngine({"a:1": saved_image([b"a"])})
    doc = manifest({"hub": "a:1", "app": "a:1"})
    doc["modulesContent"]["anomaly-detector"]["properties.desired"]["model"]["path"] = str(tmp_path / "m.bin")
    created = create_bundle(doc, platform="linux/amd64", output=tmp_path / "b.tar", engine=engine, opener=open_source)
    with tarfile.open(created.path) as tar:
        index = json.loads(tar.extractfile("outpost-bundle.json").read())  # type: ignore[union-attr]
    index["models"][0]["target"] = str(tmp_path / "elsewhere")  # unsigned bundle: the index itself is not signed
    _rewrite(created.path, tmp_path / "evil.tar", {"outpost-bundle.json": canonical_bytes(index)})

    def deploy(document: dict[str, Any], name: str) -> Any:
        raise AssertionError(f"deployed {name}")

    with pytest.raises(BundleError, match="does not match the content"):
        apply_bundle(tmp_path / "evil.tar", engine=engine, trusted={}, admit=lambda _doc: Admitted(),
                     deploy=deploy, models_dir=tmp_path / "models", work_dir=tmp_path / "work")  # fmt: skip
    assert not (tmp_path / "elsewhere").exists()


def test_a_digest_reference_is_loaded_under_a_tag_of_its_own():
    hex_ = "ab" * 32
    assert load_tag("app:1") == "app:1"
    assert load_tag(f"127.0.0.1:5000/team/app@sha256:{hex_}") == f"127.0.0.1:5000/team/app:sha256-{hex_}"
    assert load_tag(f"127.0.0.1:5000/app:1.2@sha256:{hex_}") == f"127.0.0.1:5000/app:sha256-{hex_}"
