"""``outpost bundle apply``: put a verified bundle on this device with no network.

Order, so that a bad bundle changes nothing: verify signature and every hash into a staging
directory (``verify``), check the platform against the engine, admit the content under the
device's trust policy; only then load the images (and check each tag now names the image id
the signed index pins), install model files, and hand the content to the agent, whose usual
rules apply (converge, health window, rollback to the last known good deployment).
Called by the CLI with a Docker engine, the agent's admission and its reconciler.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from outpost.agent.reconciler import ApplyResult
from outpost.agent.state import StateDir
from outpost.agent.status import StatusCode
from outpost.bundle.archive import join
from outpost.bundle.blobs import BlobDir
from outpost.bundle.engine import ImageEngine
from outpost.bundle.layout import BundleError, Index, ModelEntry, Progress, load_tag, no_progress
from outpost.bundle.models import file_refs
from outpost.bundle.verify import Verified, verify_bundle
from outpost.trust.admission import Admitted

__all__ = ["Applied", "apply_bundle", "check_bundle", "record_refusal"]

Deploy = Callable[[dict[str, Any], str], ApplyResult]
Admit = Callable[[dict[str, Any]], Admitted]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Applied:
    verified: Verified
    admitted: Admitted
    images: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)  # pointer -> where the file now is
    result: ApplyResult | None = None


def _platform_check(engine_platform: str) -> Callable[[Index], None]:
    def check(index: Index) -> None:
        if index.platform != engine_platform and not index.platform.startswith(engine_platform + "/"):
            raise BundleError(
                f"this bundle is for {index.platform}, but this engine runs {engine_platform}: "
                f"create one with --platform {engine_platform}"
            )

    return check


def check_bundle(
    path: Path, *, trusted: Mapping[str, Ed25519PublicKey], staging: BlobDir, progress: Progress = no_progress
) -> Verified:
    """Verification alone (``outpost bundle verify``), any platform."""
    return verify_bundle(path, trusted=trusted, staging=staging, progress=progress)


def record_refusal(state: StateDir, bundle: Path, reason: str, *, now: Callable[[], datetime] = _utcnow) -> None:
    """A refused bundle in the agent's status document (``status.json``), as a refused manifest is:
    ``lastDesiredStatus`` 400 with the reason, plus ``outpost.refusal`` naming the bundle. What runs
    (``outpost.deploymentId``) is left as it is: nothing was applied."""
    document = state.status() or {}
    document["lastDesiredStatus"] = {"code": int(StatusCode.BAD_CONFIG), "description": f"bundle refused: {reason}"}
    at = now().isoformat(timespec="seconds")
    document["outpost"] = {**document.get("outpost", {}), "refusal": {"source": f"bundle {bundle}", "reason": reason,
                                                                      "atUtc": at}}  # fmt: skip
    state.set_status(document)


def _model_target(entry: ModelEntry, models_dir: Path) -> Path:
    if entry.target is not None:
        return Path(entry.target)
    name = Path(urllib.parse.urlsplit(entry.source).path).name or entry.sha256
    return models_dir / name


def _check_model_entry(entry: ModelEntry, content: dict[str, Any]) -> None:
    """A model file goes only where the (admitted) content's twin points: the index must agree with it."""
    node: Any = content
    for part in entry.pointer.lstrip("/").split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise BundleError(f"the index names a model file at {entry.pointer}, which the content does not have")
    expected = next((r for r in file_refs(content) if r.pointer == entry.pointer), None)
    if node != entry.source or expected is None or expected.target != entry.target:
        raise BundleError(f"the index's model file for {entry.pointer} does not match the content: refused")


def _install(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.bundle")
    shutil.copyfile(source, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def apply_bundle(
    path: Path,
    *,
    engine: ImageEngine,
    trusted: Mapping[str, Ed25519PublicKey],
    admit: Admit,
    deploy: Deploy,
    models_dir: Path,
    work_dir: Path,
    pin: Callable[[dict[str, str]], None] = lambda _pins: None,
    progress: Progress = no_progress,
) -> Applied:
    """Verify, then load, install and deploy; ``BundleError``/``ManifestError`` before any change."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bundle-apply-", dir=work_dir) as tmp:
        staging = BlobDir(Path(tmp))
        verified = verify_bundle(
            path, trusted=trusted, staging=staging, check_index=_platform_check(engine.platform()), progress=progress
        )
        admitted = admit(verified.content)  # the device's trust policy over the content itself
        applied = Applied(verified, admitted)
        index = verified.index
        for model in index.models:
            _check_model_entry(model, verified.content)
        if index.images:
            archive = Path(tmp) / "load.tar"
            with archive.open("wb") as out:
                join(index.images, staging, out)
            progress("loading images", 0, 1)
            engine.load(archive)
            progress("loading images", 1, 1)
            pins: dict[str, str] = {}
            for image in index.images:
                tag = load_tag(image.ref)
                info = engine.inspect(tag)
                if info is None or info.id != image.id:
                    got = info.id if info else "nothing"
                    raise BundleError(f"after loading, {tag} names {got}, not {image.id} as signed")
                if tag != image.ref:
                    pins[image.ref] = image.id  # the signed index says which image this digest is
                applied.images.append(image.ref)
            pin(pins)
        for model in index.models:
            target = _model_target(model, models_dir)
            _install(staging.path(model.sha256), target)
            applied.models[model.pointer] = str(target)
        applied.result = deploy(verified.content, index.deployment)
    return applied
