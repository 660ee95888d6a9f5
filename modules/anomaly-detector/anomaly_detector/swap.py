"""Model hot-swap: fetch, verify, load into a new interpreter, validate, and only then swap.

The desired property ``model`` names the model to serve::

    {"version": "2", "url": "http://127.0.0.1:8080/motor-v2.tflite", "sha256": "<64 hex>",
     "metadataUrl": "http://127.0.0.1:8080/motor-v2.json"}        # or "metadata": {...} inline
    {"version": "1", "path": "/var/lib/outpost/models/motor-v1.tflite"}   # a local file

``url`` (``file://``, ``http://``, ``https://``) needs ``sha256``; for ``path`` it is optional. The
metadata (feature order and normalisation, see ``inputs.py``) comes from ``metadata``,
``metadataUrl``, the ``.json`` file next to a ``path``, or else stays the current model's.

:meth:`ModelManager.apply` does all the slow work (download, digest, interpreter, shape checks, a test
inference) with no lock held while the current model keeps answering; the swap itself is one
reference assignment under the lock that every inference holds, so it lands between two inferences
and no message is dropped or scored by a half-loaded model. Any failure (unreachable URL, digest
mismatch, not a TFLite file, wrong input/output shape, failing test inference) raises
:class:`ModelError` inside ``apply``, which returns it in the :class:`SwapResult`: the old model
keeps serving. Verified downloads are cached by digest in ``cache_dir`` so a restart works offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from anomaly_detector.inputs import InputError, InputSpec
from anomaly_detector.model import LoadedModel, ModelError

log = logging.getLogger("anomaly-detector")

MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_METADATA_BYTES = 1024 * 1024
FETCH_TIMEOUT_SECS = 30.0
CACHE_KEEP = 3
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

DOWNLOAD_ATTEMPTS = 5
CHUNK = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class Fetcher(Protocol):
    def __call__(self, url: str, max_bytes: int, *, token: str | None = None, partial: Path | None = None) -> bytes: ...


def fetch_url(url: str, max_bytes: int, *, token: str | None = None, partial: Path | None = None) -> bytes:
    """The bytes at a ``file://``, ``http://`` or ``https://`` URL, at most ``max_bytes``.

    Over HTTP, ``token`` is sent as ``Authorization: Bearer`` (the fleet's model token, never logged)
    and a broken link is resumed with ``Range: bytes=N-`` (a few attempts with backoff); what arrived
    is kept in ``partial`` when given, so even a restarted module resumes. The caller verifies the
    sha256 and removes ``partial``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ModelError(f"model.url: {url} is {size} bytes, over the {max_bytes}-byte limit")
            return path.read_bytes()
        except OSError as exc:
            raise ModelError(f"model.url: cannot read {url} ({exc.strerror or exc})") from None
    if parts.scheme in ("http", "https"):
        return _download(url, max_bytes, token, partial)
    raise ModelError(f"model.url: scheme {parts.scheme or '(none)'!r} is not supported (file, http, https)")


def _kept(partial: Path | None, max_bytes: int) -> bytearray:
    if partial is None:
        return bytearray()
    try:
        data = partial.read_bytes()
    except OSError:
        return bytearray()
    return bytearray(data) if len(data) <= max_bytes else bytearray()


def _keep(partial: Path | None, data: bytes, *, append: bool) -> None:
    if partial is None:
        return
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("ab" if append else "wb") as handle:
            handle.write(data)
    except OSError as exc:  # resuming across restarts is a bonus; the download goes on in memory
        log.warning("partial download %s not kept: %s", partial, exc)


def _download(url: str, max_bytes: int, token: str | None, partial: Path | None) -> bytes:
    have = _kept(partial, max_bytes)
    failures = 0
    while True:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if have:
            headers["Range"] = f"bytes={len(have)}-"
        request = urllib.request.Request(url, headers=headers)
        total: int | None = None
        try:
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECS) as response:
                ranged = response.status == 206
                span = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
                if ranged and (span is None or int(span[1]) != len(have)):
                    raise ModelError(f"model.url: {url} answered a range that does not continue the download")
                if not ranged:  # the whole file (the server ignored or we did not send a range)
                    have = bytearray()
                    _keep(partial, b"", append=False)
                if span is not None and span[3] != "*":
                    total = int(span[3])
                elif response.headers.get("Content-Length", "").isdigit():
                    total = len(have) + int(response.headers["Content-Length"])
                if total is not None and total > max_bytes:
                    raise ModelError(f"model.url: {url} is {total} bytes, over the {max_bytes}-byte limit")
                while chunk := response.read(CHUNK):
                    have += chunk
                    if len(have) > max_bytes:
                        raise ModelError(f"model.url: {url} is over the {max_bytes}-byte limit")
                    _keep(partial, chunk, append=True)
            if total is not None and len(have) < total:
                raise http.client.IncompleteRead(bytes(have), total - len(have))
            return bytes(have)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and have:  # what we kept is not a prefix of this file: start over
                have = bytearray()
                _keep(partial, b"", append=False)
                continue
            raise ModelError(f"model.url: {url} answered HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            failures += 1
            reason = getattr(exc, "reason", None) or type(exc).__name__
            if failures >= DOWNLOAD_ATTEMPTS:
                raise ModelError(
                    f"model.url: cannot fetch {url} ({reason}) after {failures} attempts; "
                    f"{len(have)} bytes kept to resume"
                ) from None
            log.warning("model download from %s broke at %d bytes (%s); resuming", url, len(have), reason)
            time.sleep(min(0.2 * 2**failures, 5.0))


@dataclass(frozen=True)
class ModelSource:
    """What the desired property ``model`` asks for."""

    version: str
    url: str | None = None
    path: str | None = None
    sha256: str | None = None
    metadata: Mapping[str, Any] | None = None
    metadata_url: str | None = None
    token: str | None = field(default=None, repr=False)
    """A download token for ``url`` (the fleet's model token): sent, never reported or logged."""

    @property
    def location(self) -> str:
        return self.url or self.path or ""

    @classmethod
    def from_desired(cls, value: Any) -> ModelSource:
        if not isinstance(value, Mapping):
            raise ModelError(f"model: expected an object with version and url or path, got {value!r}")
        known = {"version", "url", "path", "sha256", "metadata", "metadataUrl", "token"}
        unknown = sorted(k for k in value if k not in known and not k.startswith("$"))
        if unknown:
            raise ModelError(f"model.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        version = value.get("version")
        if isinstance(version, bool) or not isinstance(version, str | int) or str(version).strip() == "":
            raise ModelError(f"model.version: expected a non-empty string, got {version!r}")
        url, path = value.get("url"), value.get("path")
        if (url is None) == (path is None):
            raise ModelError("model: give exactly one of url and path")
        for key, item in (("url", url), ("path", path), ("metadataUrl", value.get("metadataUrl"))):
            if item is not None and (not isinstance(item, str) or not item):
                raise ModelError(f"model.{key}: expected a non-empty string, got {item!r}")
        sha = value.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha.lower())):
            raise ModelError(f"model.sha256: expected 64 hex digits, got {sha!r}")
        if url is not None and sha is None:
            raise ModelError("model.sha256: required with model.url (the download is verified against it)")
        token = value.get("token")
        if token is not None and (not isinstance(token, str) or not token or url is None):
            raise ModelError("model.token: expected a non-empty string, with model.url")
        metadata = value.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ModelError("model.metadata: expected an object (features, normalization)")
        return cls(
            version=str(version),
            url=url,
            path=path,
            sha256=sha.lower() if isinstance(sha, str) else None,
            metadata=metadata,
            metadata_url=value.get("metadataUrl"),
            token=token,
        )


@dataclass(frozen=True)
class SwapResult:
    ok: bool
    changed: bool
    version: str
    error: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Inference:
    score: float
    version: str
    latency_s: float
    inputs: npt.NDArray[np.float64]  # transformed, un-normalised feature values in model order


def read_metadata(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{where}: expected a JSON object")
    return doc


def spec_from_metadata(doc: Mapping[str, Any], where: str) -> InputSpec:
    try:
        return InputSpec.from_json(doc)
    except InputError as exc:
        raise ModelError(f"{where}: {exc}") from None


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ModelManager:
    """Holds the serving model; swaps it only for one that loaded and passed validation."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        fetch: Fetcher = fetch_url,
        edgetpu: str = "auto",
        max_bytes: int = MAX_MODEL_BYTES,
    ) -> None:
        self.cache_dir = cache_dir
        self._fetch = fetch
        self.edgetpu = edgetpu
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._model: LoadedModel | None = None
        self.last_error: str | None = None
        self.swaps = 0
        self.refusals = 0

    @property
    def current(self) -> LoadedModel | None:
        with self._lock:
            return self._model

    # -- loading -------------------------------------------------------------------------------

    def load_file(self, path: Path, *, version: str | None = None, metadata: Path | None = None) -> LoadedModel:
        """Load a local model with its metadata (default: the ``.json`` beside it) and serve it."""
        meta_path = metadata or path.with_suffix(".json")
        try:
            doc = read_metadata(meta_path.read_bytes(), str(meta_path))
            content = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"model: cannot read {exc.filename} ({exc.strerror})") from None
        expected = doc.get("sha256")
        digest = hashlib.sha256(content).hexdigest()
        if isinstance(expected, str) and expected.lower() != digest:
            raise ModelError(f"model: {path} has sha256 {digest}, its metadata says {expected}")
        model = LoadedModel(
            content,
            version=version or str(doc.get("version", path.stem)),
            spec=spec_from_metadata(doc, str(meta_path)),
            source=str(path),
            edgetpu=self.edgetpu,
        )
        self._install(model)
        return model

    def _cached(self, sha256: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{sha256}.tflite"
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == sha256 else None

    def _store(self, sha256: str, content: bytes, metadata: Mapping[str, Any] | None) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            if metadata is not None:
                _atomic_write(self.cache_dir / f"{sha256}.json", json.dumps(metadata).encode())
            _atomic_write(self.cache_dir / f"{sha256}.tflite", content)
            models = sorted(self.cache_dir.glob("*.tflite"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in models[CACHE_KEEP:]:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        except OSError as exc:  # a cache failure never refuses a good model
            log.warning("model cache %s not written: %s", self.cache_dir, exc)

    def _content(self, source: ModelSource) -> bytes:
        if source.sha256 is not None:
            cached = self._cached(source.sha256)
            if cached is not None:
                return cached
        if source.url is not None:
            partial = self.cache_dir / f"{source.sha256}.part" if self.cache_dir and source.sha256 else None
            return self._fetch(source.url, self.max_bytes, token=source.token, partial=partial)
        assert source.path is not None
        try:
            return Path(source.path).read_bytes()
        except OSError as exc:
            raise ModelError(f"model.path: cannot read {source.path} ({exc.strerror})") from None

    def _metadata(self, source: ModelSource, sha256: str) -> Mapping[str, Any] | None:
        if source.metadata is not None:
            return source.metadata
        if source.metadata_url is not None:
            return read_metadata(self._fetch(source.metadata_url, MAX_METADATA_BYTES), "model.metadataUrl")
        if self.cache_dir is not None:
            with contextlib.suppress(OSError):
                return read_metadata((self.cache_dir / f"{sha256}.json").read_bytes(), "cached metadata")
        if source.path is not None:
            sibling = Path(source.path).with_suffix(".json")
            if sibling.is_file():
                try:
                    return read_metadata(sibling.read_bytes(), str(sibling))
                except OSError as exc:
                    raise ModelError(f"model: cannot read {sibling} ({exc.strerror})") from None
        return None

    def prepare(self, source: ModelSource) -> LoadedModel:
        """Fetch, verify and load ``source`` into a new interpreter; raises ``ModelError``. Does not swap."""
        content = self._content(source)
        digest = hashlib.sha256(content).hexdigest()
        if self.cache_dir is not None and source.sha256 is not None:  # verified or not, never resumed again
            with contextlib.suppress(OSError):
                (self.cache_dir / f"{source.sha256}.part").unlink(missing_ok=True)
        if source.sha256 is not None and digest != source.sha256:
            raise ModelError(f"model.sha256: {source.location} has sha256 {digest}, expected {source.sha256}; refused")
        metadata = self._metadata(source, digest)
        if metadata is not None:
            spec = spec_from_metadata(metadata, "model metadata")
            declared = metadata.get("sha256")
            if isinstance(declared, str) and declared.lower() != digest:
                raise ModelError(f"model metadata: describes sha256 {declared}, the model file is {digest}")
        else:
            current = self.current
            if current is None:
                raise ModelError("model: no metadata (features, normalization) given and no current model to reuse")
            spec = current.spec
        model = LoadedModel(content, version=source.version, spec=spec, source=source.location, edgetpu=self.edgetpu)
        if source.url is not None:
            self._store(digest, content, metadata)
        return model

    def _install(self, model: LoadedModel) -> None:
        with self._lock:
            previous, self._model = self._model, model
        self.swaps += previous is not None
        self.last_error = None
        log.info(
            "serving model %s (sha256 %s, %d bytes, %s)%s",
            model.version,
            model.sha256[:12],
            model.size_bytes,
            model.delegate,
            f", replacing {previous.version}" if previous is not None else "",
        )

    def serves(self, source: ModelSource) -> bool:
        current = self.current
        return (
            current is not None
            and current.version == source.version
            and (source.sha256 is None or source.sha256 == current.sha256)
        )

    def apply(self, source: ModelSource) -> SwapResult:
        """Swap to ``source`` if it loads and validates; otherwise keep the current model."""
        if self.serves(source):
            self.last_error = None  # the model asked for is served: an error about an earlier ask is history
            return SwapResult(ok=True, changed=False, version=source.version)
        started = time.monotonic()
        try:
            model = self.prepare(source)
        except ModelError as exc:
            self.refusals += 1
            self.last_error = str(exc)
            current = self.current
            log.error(
                "model %s refused, still serving %s: %s",
                source.version,
                current.version if current else "nothing",
                exc,
            )
            return SwapResult(
                ok=False, changed=False, version=source.version, error=str(exc), seconds=time.monotonic() - started
            )
        self._install(model)
        return SwapResult(ok=True, changed=True, version=source.version, seconds=time.monotonic() - started)

    # -- serving -------------------------------------------------------------------------------

    def infer(self, features: Mapping[str, Any]) -> Inference:
        """Score one features message with the serving model (raises ``InputError`` for a message that
        lacks the model's inputs, ``ModelError`` when no model is loaded)."""
        with self._lock:
            model = self._model
            if model is None:
                raise ModelError("no model loaded")
            raw = model.spec.raw_vector(features)
            started = time.perf_counter()
            score = model.predict(model.spec.normalize(raw))
            latency = time.perf_counter() - started
            return Inference(score=score, version=model.version, latency_s=latency, inputs=raw)


class BackgroundSwapper:
    """Runs ``ModelManager.apply`` on its own thread so a slow download never holds up inputs. Only the
    newest submitted source is applied (an older pending one is superseded)."""

    def __init__(self, manager: ModelManager, on_done: Callable[[SwapResult], None] | None = None) -> None:
        self.manager = manager
        self.on_done = on_done
        self._cond = threading.Condition()
        self._pending: ModelSource | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="model-swap", daemon=True)
        self._thread.start()

    def submit(self, source: ModelSource) -> None:
        with self._cond:
            self._pending = source
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed or self._pending is None:
                    return
                source, self._pending, self._busy = self._pending, None, True
            try:
                result = self.manager.apply(source)
                if self.on_done is not None:
                    self.on_done(result)
            except Exception:  # never let the swap thread die
                log.exception("model swap to %s failed unexpectedly", source.version)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
