"""Model hot-swap: a good model swaps between two inferences; a corrupt file, a digest mismatch, a
wrong-shape model or an unreachable URL is refused with a clear error and the old model keeps serving."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anomaly_detector.inputs import InputSpec
from anomaly_detector.model import LoadedModel, ModelError
from anomaly_detector.swap import BackgroundSwapper, ModelManager, ModelSource, fetch_url

FEATURES: dict[str, Any] = {
    "deviceID": "m1",
    "current": 8.0,
    "temperature": 45.0,
    "fft_data": {"vibration": {"bands": {"80-200": 2e-5}}, "sound": {"bands": {"2000-4000": 5e-5}}},
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def manager(bundled_model: Path, tmp_path: Path) -> ModelManager:
    m = ModelManager(cache_dir=tmp_path / "cache", edgetpu="off")
    m.load_file(bundled_model)
    return m


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory, float_model: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("www")
    (root / "motor-v2.tflite").write_bytes(float_model.read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
    thread.join()


def test_bundled_model_serves(manager: ModelManager) -> None:
    result = manager.infer(FEATURES)
    assert result.version == "1"
    assert 0.0 <= result.score < 0.5
    assert manager.current is not None
    assert manager.current.delegate == "cpu"


def test_good_model_from_file_url_swaps(manager: ModelManager, float_model: Path) -> None:
    result = manager.apply(ModelSource(version="2", url=float_model.as_uri(), sha256=sha(float_model)))
    assert (result.ok, result.changed, result.error) == (True, True, None)
    assert manager.infer(FEATURES).version == "2"
    assert manager.current is not None
    assert manager.current.input.dtype == "float32"
    assert manager.swaps == 1


def test_good_model_over_http_swaps_and_is_cached(
    manager: ModelManager, http_root: tuple[str, Path], float_model: Path, bundled_model: Path, tmp_path: Path
) -> None:
    base, _ = http_root
    source = ModelSource.from_desired({"version": "2", "url": f"{base}/motor-v2.tflite", "sha256": sha(float_model)})
    assert manager.apply(source).ok
    assert manager.infer(FEATURES).version == "2"
    # A restart with no network loads the verified copy from the cache.
    offline = ModelManager(cache_dir=tmp_path / "cache", edgetpu="off", fetch=_unreachable)
    offline.load_file(bundled_model)
    assert offline.apply(source).ok
    assert offline.infer(FEATURES).version == "2"


def _unreachable(url: str, limit: int, *, token: str | None = None, partial: Path | None = None) -> bytes:
    raise ModelError(f"model.url: cannot fetch {url} (offline)")


def assert_refused(manager: ModelManager, source: ModelSource, needle: str) -> str:
    before = manager.current
    result = manager.apply(source)
    assert not result.ok
    assert not result.changed
    assert result.error is not None
    assert needle in result.error, result.error
    assert manager.current is before
    assert manager.infer(FEATURES).version == "1"  # the old model still answers
    assert manager.last_error == result.error
    return str(result.error)


def test_corrupt_file_is_refused(manager: ModelManager, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(b"TFL3 definitely not a flatbuffer" * 20)
    error = assert_refused(manager, ModelSource(version="2", url=bad.as_uri(), sha256=sha(bad)), "not a loadable")
    assert "model '2'" in error


def test_truncated_model_is_refused(manager: ModelManager, bundled_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(bundled_model.read_bytes()[:1000])
    assert_refused(manager, ModelSource(version="2", url=bad.as_uri(), sha256=sha(bad)), "not a loadable")


def test_digest_mismatch_is_refused(manager: ModelManager, float_model: Path) -> None:
    error = assert_refused(manager, ModelSource(version="2", url=float_model.as_uri(), sha256="0" * 64), "sha256")
    assert sha(float_model) in error
    assert "expected " + "0" * 64 in error


def test_wrong_shape_is_refused(manager: ModelManager, wrong_shape_model: Path) -> None:
    source = ModelSource(version="2", url=wrong_shape_model.as_uri(), sha256=sha(wrong_shape_model))
    assert_refused(manager, source, "input shape [1, 5] does not match the 4 features")


def test_unreachable_and_missing_are_refused(
    manager: ModelManager, http_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = http_root
    assert_refused(manager, ModelSource(version="2", url=f"{base}/nope.tflite", sha256="a" * 64), "HTTP 404")
    assert_refused(manager, ModelSource(version="2", url=(tmp_path / "gone").as_uri(), sha256="a" * 64), "cannot read")
    assert_refused(manager, ModelSource(version="2", path=str(tmp_path / "gone.tflite")), "model.path")
    assert manager.refusals == 3


def test_metadata_that_does_not_fit_is_refused(manager: ModelManager, float_model: Path) -> None:
    meta = {"features": [{"name": "x", "path": ["current"]}], "normalization": {"mean": [0], "std": [1]}}
    source = ModelSource(version="2", url=float_model.as_uri(), sha256=sha(float_model), metadata=meta)
    assert_refused(manager, source, "input shape [1, 4] does not match the 1 features")
    broken = ModelSource(version="3", url=float_model.as_uri(), sha256=sha(float_model), metadata={"features": []})
    assert_refused(manager, broken, "features: expected a non-empty list")


def test_path_source_with_sibling_metadata(manager: ModelManager, float_model: Path) -> None:
    # ci/model/artifacts/motor-v1-float.json sits next to the float model.
    result = manager.apply(ModelSource.from_desired({"version": "1-float", "path": str(float_model)}))
    assert result.ok
    assert result.changed
    assert manager.infer(FEATURES).version == "1-float"


def test_the_version_already_serving_is_not_reloaded(manager: ModelManager) -> None:
    # The manifest's own desired model (version "1" at a path the device may not have) is the bundled one.
    source = ModelSource.from_desired({"version": "1", "path": "/var/lib/outpost/models/motor-v1.tflite"})
    result = manager.apply(source)
    assert (result.ok, result.changed) == (True, False)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"version": "2", "url": "http://127.0.0.1/x.tflite"}, "model.sha256: required"),
        ({"version": "2", "url": "http://x", "sha256": "xyz"}, "model.sha256: expected 64 hex"),
        ({"version": "2"}, "exactly one of url and path"),
        ({"version": "2", "url": "a", "path": "b", "sha256": "a" * 64}, "exactly one of url and path"),
        ({"url": "file:///x", "sha256": "a" * 64}, "model.version"),
        ({"version": "2", "path": "/x", "checksum": 1}, "model.checksum: unknown"),
        ("motor-v2", "model: expected an object"),
    ],
)
def test_bad_desired_model_is_named(value: Any, needle: str) -> None:
    with pytest.raises(ModelError, match=needle):
        ModelSource.from_desired(value)


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(ModelError, match="scheme 'ftp' is not supported"):
        fetch_url("ftp://127.0.0.1/model.tflite", 1024)


def test_size_limit(float_model: Path) -> None:
    with pytest.raises(ModelError, match="over the 100-byte limit"):
        fetch_url(float_model.as_uri(), 100)


def test_swap_happens_between_inferences_and_no_message_is_dropped(manager: ModelManager, float_model: Path) -> None:
    """A slow download on the swap thread while messages keep being scored: every message gets a score,
    the old model answers until the swap, the new one from then on, never a mix."""
    release = threading.Event()
    content = float_model.read_bytes()

    def slow_fetch(url: str, limit: int, **_: object) -> bytes:
        release.wait(5)
        return content

    manager._fetch = slow_fetch
    swapper = BackgroundSwapper(manager)
    try:
        digest = hashlib.sha256(content).hexdigest()
        swapper.submit(ModelSource(version="2", url="http://127.0.0.1/slow", sha256=digest))
        versions = [manager.infer(FEATURES).version for _ in range(200)]  # download still pending
        release.set()
        assert swapper.wait_idle(10)
        versions += [manager.infer(FEATURES).version for _ in range(50)]
    finally:
        swapper.close()
    assert len(versions) == 250
    switch = versions.index("2")
    assert set(versions[:switch]) == {"1"}
    assert set(versions[switch:]) == {"2"}
    assert switch >= 200


def test_concurrent_inference_during_swap(manager: ModelManager, float_model: Path) -> None:
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def score() -> None:
        while not stop.is_set():
            try:
                seen.append(manager.infer(FEATURES).version)
            except BaseException as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    worker = threading.Thread(target=score)
    worker.start()
    try:
        for version in ("2", "3", "4"):
            assert manager.apply(ModelSource(version=version, url=float_model.as_uri(), sha256=sha(float_model))).ok
    finally:
        stop.set()
        worker.join()
    assert not errors
    assert seen
    assert seen[-1] == "4"


def test_loaded_model_validates_output_and_shape(bundled_model: Path) -> None:
    spec = InputSpec.from_json(json.loads(bundled_model.with_suffix(".json").read_text()))
    model = LoadedModel(bundled_model.read_bytes(), version="1", spec=spec, edgetpu="off")
    assert model.describe()["sha256"] == sha(bundled_model)
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        LoadedModel(b"", version="x", spec=spec, edgetpu="off")


@pytest.fixture
def flaky_server(float_model: Path) -> Iterator[tuple[str, list[str | None]]]:
    """Serves the float model to ``Bearer tok`` only; the first whole-file answer breaks halfway."""
    content = float_model.read_bytes()
    ranges: list[str | None] = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != "Bearer tok":
                self.send_error(401)
                return
            wanted = self.headers.get("Range")
            ranges.append(wanted)
            if wanted is None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content[: len(content) // 2])  # and the link breaks
                self.close_connection = True
                return
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.send_header("Content-Length", str(len(content) - start))
            self.end_headers()
            self.wfile.write(content[start:])

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/motor-v2.tflite", ranges
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_broken_download_resumes_with_a_range_and_the_token(
    flaky_server: tuple[str, list[str | None]], float_model: Path, tmp_path: Path
) -> None:
    url, ranges = flaky_server
    content = float_model.read_bytes()
    assert fetch_url(url, 1 << 20, token="tok") == content
    assert ranges == [None, f"bytes={len(content) // 2}-"]
    with pytest.raises(ModelError, match="HTTP 401") as refused:
        fetch_url(url, 1 << 20, token="other")
    assert "other" not in str(refused.value)  # the token is never in an error (they are reported)


def test_a_restarted_module_resumes_from_its_partial_file(
    flaky_server: tuple[str, list[str | None]], float_model: Path, bundled_model: Path, tmp_path: Path
) -> None:
    url, ranges = flaky_server
    content = float_model.read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{sha(float_model)}.part").write_bytes(content[:1000])  # what a module got before it restarted
    manager = ModelManager(cache_dir=cache, edgetpu="off")
    manager.load_file(bundled_model)
    source = ModelSource.from_desired({"version": "2", "url": url, "sha256": sha(float_model), "token": "tok"})
    assert "tok" not in repr(source)
    assert manager.apply(source).ok
    assert ranges == ["bytes=1000-"]
    assert not (cache / f"{sha(float_model)}.part").exists()
    assert (cache / f"{sha(float_model)}.tflite").read_bytes() == content
    assert "tok" not in json.dumps(manager.current.describe() if manager.current else {})


def test_a_kept_partial_that_is_not_the_model_is_refused_by_its_digest_and_dropped(
    flaky_server: tuple[str, list[str | None]], float_model: Path, bundled_model: Path, tmp_path: Path
) -> None:
    url, _ = flaky_server
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{sha(float_model)}.part").write_bytes(b"garbage" * 100)
    manager = ModelManager(cache_dir=cache, edgetpu="off")
    manager.load_file(bundled_model)
    source = ModelSource(version="2", url=url, sha256=sha(float_model), token="tok")
    error = assert_refused(manager, source, "sha256")
    assert manager.infer(FEATURES).version == "1"
    assert "tok" not in error
    assert not (cache / f"{sha(float_model)}.part").exists()
    assert manager.apply(source).ok  # the next attempt starts afresh
