"""Offline bundles up: a site's queued ``$upstream`` messages carried home, and the receipt back.

- ``export_upstream``: every unexpired ``$upstream`` delivery in the hub's store, plus the
  reported properties the device holds, into a tar signed by the device's own key. Nothing is
  removed: until a receipt comes back the messages stay queued (and drain as usual if a link
  appears), so a lost stick loses nothing.
- ``import_upstream``: at a connected place, put the messages into an importer's store (the
  hub's own ``MessageStore``: duplicates are dropped by message id, across imports) and drain
  it through the hub's own upstream ``Sink`` (e.g. Kafka); the receipt names every message id
  now known to be at the far end (delivered this time or before).
- ``release``: on the device, ack exactly the receipt's ids in the store's ``$upstream`` queue.

Pure over the ``MessageStore`` and ``Sink`` Protocols; the CLI passes in the SQLite store and
the sink built from the hub's settings.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from outpost.bundle.layout import BundleError
from outpost.hub.sinks import FailureKind, Sink
from outpost.hub.store import UPSTREAM, Delivery, MessageStore, Stored
from outpost.trust.canonical import canonical_bytes
from outpost.trust.keys import key_id, public_from_raw, raw_public
from outpost.trust.signing import Context, Signature, VerdictKind, check, sign
from outpost.wire.message import Message

__all__ = ["Exported", "Imported", "Released", "export_upstream", "import_upstream", "release"]

EXPORT_FORMAT = "outpost-upstream/1"
RECEIPT_FORMAT = "outpost-receipt/1"
INDEX = "outpost-upstream.json"
SIGNATURE = "outpost-upstream.sig"
MESSAGES = "messages.jsonl"
REPORTED = "reported.json"
_KEEP_SECS = 10 * 365 * 86_400.0  # the importer's store remembers ids (and keeps undelivered ones) this long
_MAX_META = 16 << 20


def _to_json(stored: Stored) -> dict[str, Any]:
    m = stored.message
    return {
        "id": m.id,
        "body": base64.b64encode(m.body).decode(),
        "device": m.source_device,
        "module": m.source_module,
        "output": m.output,
        "properties": dict(m.properties),
        "system": dict(m.system),
        "enqueuedAt": stored.enqueued_at,
    }


def _from_json(data: Any, line: int) -> Message:
    try:
        return Message(
            id=str(data["id"]),
            body=base64.b64decode(data["body"], validate=True),
            source_device=str(data["device"]),
            source_module=None if data.get("module") is None else str(data["module"]),
            output=None if data.get("output") is None else str(data["output"]),
            properties={str(k): str(v) for k, v in dict(data.get("properties", {})).items()},
            system={str(k): str(v) for k, v in dict(data.get("system", {})).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{MESSAGES}: line {line}: not a message ({exc!r})") from exc


def _all_upstream(store: MessageStore, now: float) -> list[Stored]:
    return store.next_batch(UPSTREAM, max(store.depth(UPSTREAM), 1), now)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@dataclass
class Exported:
    path: Path
    messages: int
    key_id: str


def export_upstream(
    store: MessageStore,
    *,
    device_id: str,
    reported: Mapping[str, Any],
    key: Ed25519PrivateKey,
    output: Path,
    now: Callable[[], float] = time.time,
) -> Exported:
    """Write the export tar (see the module docstring); the store is only read."""
    queued = _all_upstream(store, now())
    lines = b"".join(json.dumps(_to_json(s), separators=(",", ":")).encode() + b"\n" for s in queued)
    reported_bytes = json.dumps(dict(reported), indent=2, sort_keys=True).encode() + b"\n"
    public = key.public_key()
    kid = key_id(public)
    index = {
        "format": EXPORT_FORMAT,
        "deviceId": device_id,
        "createdAt": datetime.fromtimestamp(now(), UTC).isoformat(timespec="seconds"),
        "keyId": kid,
        "publicKey": base64.b64encode(raw_public(public)).decode(),
        "messages": {"count": len(queued), **_digest(lines)},
        "reported": _digest(reported_bytes),
    }
    index_bytes = canonical_bytes(index)
    signature = json.dumps({"signatures": [sign(Context.UPSTREAM, index_bytes, key).to_json()]}).encode()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, INDEX, index_bytes)
        _add(tar, SIGNATURE, signature)
        _add(tar, MESSAGES, lines)
        _add(tar, REPORTED, reported_bytes)
    partial.replace(output)
    return Exported(output, len(queued), kid)


@dataclass
class _Export:
    index: dict[str, Any]
    index_bytes: bytes
    messages: list[Message]
    reported: dict[str, Any]
    signatures: list[Signature]
    reported_bytes: bytes


def _read_export(path: Path, device_keys: Sequence[str]) -> _Export:
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if set(members) != {INDEX, SIGNATURE, MESSAGES, REPORTED}:
                raise BundleError(f"{path}: not an upstream export (files: {', '.join(sorted(members)) or 'none'})")
            data = {}
            for name, member in members.items():
                if not member.isfile() or member.size > (_MAX_META if name != MESSAGES else 1 << 40):
                    raise BundleError(f"{path}: {name} is not a regular file of a sane size")
                handle = tar.extractfile(member)
                assert handle is not None
                data[name] = handle.read()
                if len(data[name]) != member.size:
                    raise BundleError(f"{path}: {name} is cut short: the export is truncated")
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{path}: the export is truncated or damaged ({exc})") from exc
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the export ({exc.strerror or exc})") from exc
    try:
        index = json.loads(data[INDEX])
        public = public_from_raw(base64.b64decode(index["publicKey"]))
        signatures = [Signature.from_json(s) for s in json.loads(data[SIGNATURE])["signatures"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: malformed index or signature ({exc})") from exc
    if index.get("format") != EXPORT_FORMAT or canonical_bytes(index) != data[INDEX]:
        raise BundleError(f"{path}: not an {EXPORT_FORMAT} export made by `outpost bundle export-upstream`")
    kid = key_id(public)
    if device_keys and kid not in device_keys:
        raise BundleError(f"{path}: signed by device key {kid}, not by {', '.join(device_keys)}")
    verdict = check(Context.UPSTREAM, data[INDEX], signatures, {kid: public})
    if not verdict.ok:
        raise BundleError(f"{path}: the device's signature does not match its index: the export was altered")
    for name, key in ((MESSAGES, "messages"), (REPORTED, "reported")):
        if _digest(data[name]) != {k: index[key][k] for k in ("sha256", "size")}:
            raise BundleError(f"{path}: {name} does not match the signed index: altered or truncated")
    messages = [_from_json(json.loads(line), n) for n, line in enumerate(data[MESSAGES].splitlines(), start=1)]
    if len(messages) != index["messages"]["count"]:
        raise BundleError(f"{path}: {len(messages)} messages, the index says {index['messages']['count']}")
    return _Export(index, data[INDEX], messages, json.loads(data[REPORTED]), signatures, data[REPORTED])


@dataclass
class Imported:
    receipt: dict[str, Any]
    delivered: list[str] = field(default_factory=list)  # sent in this import
    duplicates: list[str] = field(default_factory=list)  # at the far end from an earlier import
    pending: list[str] = field(default_factory=list)  # not delivered (sink down or refused): not in the receipt
    reported: dict[str, Any] = field(default_factory=dict)
    failure: str = ""
    proof: dict[str, Any] = field(default_factory=dict)  # index, signatures and reported.json, for a fleet to check


def import_upstream(
    path: Path,
    *,
    store: MessageStore,
    sink: Sink,
    device_keys: Sequence[str] = (),
    sign_key: Ed25519PrivateKey | None = None,
    rounds: int = 5,
    batch: int = 500,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Imported:
    """Deliver an export through ``sink`` with duplicates dropped by id; return the receipt."""
    export = _read_export(path, device_keys)
    ids = [m.id for m in export.messages]
    put = store.put_batch([(m, [Delivery(UPSTREAM, 0, now() + _KEEP_SECS)]) for m in export.messages], now())
    if put.rejected:
        raise BundleError(f"the importer's store is full: {len(put.rejected)} message(s) refused; free space and retry")
    result = Imported(receipt={})
    stalled = 0
    while stalled < rounds:
        pending = store.next_batch(UPSTREAM, batch, now())
        if not pending:
            break
        sent = sink.send(pending)
        if sent.succeeded:
            store.ack(UPSTREAM, sent.succeeded)
        if sent.invalid:
            store.dead_letter(UPSTREAM, [seq for seq, _ in sent.invalid], "; ".join(why for _, why in sent.invalid))
        if sent.failure is not FailureKind.NONE and not sent.succeeded:
            stalled += 1
            result.failure = f"{sent.failure.value}: {sent.detail}"
            sleep(min(2.0**stalled, 10.0))
        else:
            stalled = 0
    still = {s.message.id for s in _all_upstream(store, now())}
    fresh = set(put.stored)
    result.delivered = [i for i in ids if i in fresh and i not in still]
    result.duplicates = [i for i in ids if i not in fresh and i not in still]
    result.pending = [i for i in ids if i in still]
    dead = set(ids) - set(result.delivered) - set(result.duplicates) - set(result.pending)
    result.pending += sorted(dead)  # dead-lettered by the sink: never reached the far end
    result.reported = export.reported
    result.proof = {
        "index": base64.b64encode(export.index_bytes).decode(),
        "signatures": [s.to_json() for s in export.signatures],
        "reported": base64.b64encode(export.reported_bytes).decode(),
    }
    receipt: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "deviceId": export.index["deviceId"],
        "export": _digest(export.index_bytes)["sha256"],
        "importedAt": datetime.fromtimestamp(now(), UTC).isoformat(timespec="seconds"),
        "sink": sink.name,
        "messages": sorted({*result.delivered, *result.duplicates}),
        "delivered": len(result.delivered),
        "duplicates": len(result.duplicates),
        "notDelivered": len(result.pending),
    }
    if sign_key is not None:
        receipt["signatures"] = [sign(Context.RECEIPT, canonical_bytes(receipt), sign_key).to_json()]
    result.receipt = receipt
    return result


@dataclass
class Released:
    released: int
    already_gone: int  # named, but no longer queued (drained over a link meanwhile, or released before)


def release(
    store: MessageStore,
    receipt: Any,
    *,
    device_id: str,
    trusted: Mapping[str, Ed25519PublicKey],
    now: Callable[[], float] = time.time,
) -> Released:
    """Ack exactly the receipt's message ids in ``$upstream``; refuse a receipt for another device,
    or (with a trust root) one not signed by a trusted key."""
    if not isinstance(receipt, dict) or receipt.get("format") != RECEIPT_FORMAT:
        raise BundleError(f"not an {RECEIPT_FORMAT} receipt (made by `outpost bundle import-upstream`)")
    if receipt.get("deviceId") != device_id:
        raise BundleError(f"this receipt is for device {receipt.get('deviceId')!r}, not {device_id!r}")
    ids = receipt.get("messages")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BundleError("receipt: /messages must be a list of message ids")
    if trusted:
        try:
            signatures = [Signature.from_json(s) for s in receipt.get("signatures", [])]
        except ValueError as exc:
            raise BundleError(f"receipt: /signatures: {exc}") from exc
        unsigned = {k: v for k, v in receipt.items() if k != "signatures"}
        verdict = check(Context.RECEIPT, canonical_bytes(unsigned), signatures, trusted)
        if not verdict.ok:
            why = {
                VerdictKind.UNSIGNED: "unsigned receipt refused: import with --sign-key",
                VerdictKind.UNKNOWN_KEY: verdict.detail,
            }.get(verdict.kind, "the receipt was changed after signing")
            raise BundleError(f"receipt refused: {why}; nothing was released")
    wanted = set(ids)
    seqs = [s.seq for s in _all_upstream(store, now()) if s.message.id in wanted]
    if seqs:
        store.ack(UPSTREAM, seqs)
    return Released(len(seqs), len(wanted) - len(seqs))
