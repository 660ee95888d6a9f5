"""Check a bundle before anything is touched: signature, then every file's size and sha256.

One sequential pass over the tar (a USB stick reads fastest that way): the index and its
signature come first and are checked before any other byte is trusted; every later file is
hashed while it is copied into a staging directory, and anything unlisted, listed twice,
missing, of another size or hash, or a truncated tar refuses the whole bundle. What is staged
is what was hashed, so the bytes the engine loads are the verified ones, even if the stick
is changed afterwards. Pure (stdlib tarfile). Used by ``apply`` and ``outpost bundle verify``.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from outpost.bundle.archive import platform_of
from outpost.bundle.blobs import BlobDir
from outpost.bundle.layout import CONTENT, INDEX, SIGNATURE, BundleError, Index, Progress, no_progress, offset
from outpost.trust.canonical import canonical_bytes
from outpost.trust.signing import Context, Signature, VerdictKind, check

__all__ = ["Verified", "verify_bundle"]

_MAX_META = 64 << 20  # index and signature are small; refuse to read a huge one into memory


@dataclass
class Verified:
    index: Index
    content: dict[str, Any]
    signer: str  # trusted key id that signed the index; "" when the device has no trust root
    staged: BlobDir
    note: str = ""


def _small(tar: tarfile.TarFile, member: tarfile.TarInfo | None, name: str) -> bytes:
    if member is None or member.name != name or not member.isfile():
        raise BundleError(f"not an outpost bundle: {name} must come {'first' if name == INDEX else 'second'}")
    if member.size > _MAX_META:
        raise BundleError(f"{name} is {member.size} bytes: not an outpost bundle")
    handle = tar.extractfile(member)
    assert handle is not None
    data = handle.read()
    if len(data) != member.size:
        raise BundleError(f"{name} is cut short: the bundle is truncated")
    return data


def _signature_verdict(
    index_bytes: bytes, sig_bytes: bytes, trusted: Mapping[str, Ed25519PublicKey]
) -> tuple[str, str]:
    try:
        entries = json.loads(sig_bytes)["signatures"]
        signatures = [Signature.from_json(e) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{SIGNATURE}: malformed ({exc})") from exc
    if not trusted:
        named = ", ".join(s.key_id for s in signatures)
        return "", (f"signed by {named}; not checked: this device has no trust root" if named else "unsigned")
    verdict = check(Context.BUNDLE, index_bytes, signatures, trusted)
    if verdict.ok:
        return verdict.key_id, ""
    keys = ", ".join(sorted(trusted))
    match verdict.kind:
        case VerdictKind.UNSIGNED:
            raise BundleError(f"unsigned bundle refused: this device trusts {keys}; create it with --sign-key")
        case VerdictKind.UNKNOWN_KEY:
            raise BundleError(f"bundle refused: {verdict.detail}; it trusts {keys}")
    raise BundleError(f"bundle refused: its index or signature was changed after signing ({verdict.detail})")


def verify_bundle(
    path: Path,
    *,
    trusted: Mapping[str, Ed25519PublicKey],
    staging: BlobDir,
    check_index: Callable[[Index], None] | None = None,
    progress: Progress = no_progress,
) -> Verified:
    """Verify ``path`` into ``staging``; ``check_index`` runs once the index is authentic (before
    the big files are read), e.g. to refuse a bundle for another platform early."""
    try:
        with tarfile.open(path, mode="r|") as tar:
            index_bytes = _small(tar, tar.next(), INDEX)
            sig_bytes = _small(tar, tar.next(), SIGNATURE)
            signer, note = _signature_verdict(index_bytes, sig_bytes, trusted)
            try:
                raw_index = json.loads(index_bytes)
            except ValueError as exc:
                raise BundleError(f"{INDEX}: not JSON ({exc})") from exc
            if canonical_bytes(raw_index) != index_bytes:
                raise BundleError(f"{INDEX}: not in canonical form: not made by `outpost bundle create`")
            index = Index.from_json(raw_index)
            if check_index is not None:
                check_index(index)
            total = sum(f.size for f in index.files.values())
            seen: set[str] = set()
            done = 0
            while (member := tar.next()) is not None:  # (iterating the TarFile would restart at the index)
                name = member.name
                entry = index.files.get(name)
                if entry is None:
                    raise BundleError(f"{name}: not listed in the bundle's index (added after the bundle was made)")
                if name in seen or not member.isfile():
                    raise BundleError(f"{name}: listed twice or not a regular file: the bundle was altered")
                seen.add(name)
                handle = tar.extractfile(member)
                assert handle is not None
                got = staging.put(handle, what="verifying", total=total, progress=offset(progress, done))
                size = staging.path(got).stat().st_size
                done += size
                if size != entry.size:
                    staging.path(got).unlink()
                    raise BundleError(f"{name}: {size} bytes instead of {entry.size}: the bundle is truncated")
                if got != entry.sha256:
                    staging.path(got).unlink()
                    raise BundleError(f"{name}: sha256 {got} does not match the index ({entry.sha256}): altered")
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path}: the bundle is truncated or damaged ({exc})") from exc
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the bundle ({exc.strerror or exc})") from exc
    missing = sorted(set(index.files) - seen)
    if missing:
        raise BundleError(f"the bundle is truncated: {len(missing)} file(s) missing, first {missing[0]}")
    _check_platforms(index, staging)
    content = json.loads(staging.path(index.files[CONTENT].sha256).read_bytes())
    if not isinstance(content, dict):
        raise BundleError(f"{CONTENT}: a manifest is a JSON object")
    return Verified(index, content, signer, staging, note)


def _check_platforms(index: Index, staging: BlobDir) -> None:
    for image in index.images:
        config = json.loads(staging.path(image.config).read_bytes())
        actual = platform_of(config)
        if actual != image.platform or not (actual == index.platform or actual.startswith(index.platform + "/")):
            raise BundleError(
                f"image {image.ref} is {actual}, but the bundle says {image.platform} for {index.platform}"
            )
