"""Each device's effective deployment, resolved with the manifest package's one implementation.

:func:`outpost.manifest.select_stack` picks the deployments that apply to a device (Azure's
priority rules; the same code ``outpost manifest show --layer`` runs) and
:func:`outpost.manifest.compose` lays a stack down. Content is immutable, so a stack's manifest
is composed once per resolver and shared by every device with that stack: 10,000 devices
against 50 deployments cost 500,000 compiled condition calls and a handful of compositions.

The ETag of what a device gets is a hash of its stack and its operator-set module desired
properties (with their versions and signatures): it changes exactly when the document would, and
costs no composition to check. When the stack is signed, the overrides merged in travel with
it at ``/outpost/overrides`` (:mod:`outpost.trust.overrides`) for a trust-rooted device to check.
Called by :mod:`outpost.fleet.service` (device fetches, long-polls and status counts).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from outpost.errors import ManifestError, Problem
from outpost.fleet.models import DeploymentRecord, ModuleTwin
from outpost.lang import TargetCondition, compile_target
from outpost.manifest import Deployment, compose, select_stack, stack_of
from outpost.trust.overrides import Override, with_override_entries, with_overrides
from outpost.trust.parts import Part, has_parts, with_parts
from outpost.trust.signing import Signature

__all__ = ["Assignment", "Resolver", "etag_of", "target", "twin_overrides"]


@functools.lru_cache(maxsize=4096)
def target(text: str) -> TargetCondition:
    """Compiled target conditions, kept: records change priority or target, never their text in place."""
    return compile_target(text)


@dataclass(frozen=True)
class Assignment:
    """What one device should run now."""

    device_id: str
    etag: str
    stack: tuple[str, ...]
    document: dict[str, Any] | None
    problems: list[Problem] = field(default_factory=list)
    document_json: str | None = None  # the document serialized once for every device sharing it

    def as_json(self) -> str:
        """The response body; a shared document is not serialized again for every device."""
        if self.document_json is None:
            return json.dumps(self.as_dict(), separators=(",", ":"))
        head = json.dumps(
            {"deviceId": self.device_id, "etag": self.etag, "deployments": list(self.stack)}, separators=(",", ":")
        )
        return f'{head[:-1]},"manifest":{self.document_json},"problems":[]}}'

    def as_dict(self) -> dict[str, Any]:
        return {
            "deviceId": self.device_id,
            "etag": self.etag,
            "deployments": list(self.stack),
            "manifest": self.document,
            "problems": [{"pointer": p.pointer, "message": p.message} for p in self.problems],
        }


def etag_of(stack: Sequence[str], overrides: Mapping[str, Override]) -> str:
    entries = {module: override.to_json() for module, override in overrides.items()}
    data = json.dumps([list(stack), entries], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def twin_overrides(twins: Iterable[ModuleTwin]) -> dict[str, Override]:
    """Module id -> the operator's override, of the module twins that have one (desired or signed)."""
    return {
        t.module_id: Override(t.device_id, t.module_id, t.desired_version, t.desired, _signatures(t.desired_signatures))
        for t in twins
        if t.desired or t.desired_signatures
    }


class Resolver:
    """Resolution against one snapshot of the fleet's deployments."""

    def __init__(self, records: Sequence[DeploymentRecord]) -> None:
        self.records = {record.id: record for record in records}
        self._deployments = [
            Deployment(
                id=r.id,
                modules_content=r.content,
                target=target(r.target),
                priority=r.priority,
                layered=r.layered,
                labels=r.labels,
                metrics=r.metrics,
                created=r.created,
                order=r.seq,
            )
            for r in records
        ]
        self._composed: dict[tuple[str, ...], dict[str, Any] | ManifestError] = {}
        self._json: dict[tuple[str, ...], str] = {}
        self._etags: dict[tuple[str, ...], str] = {}
        self._signed: dict[tuple[str, ...], dict[str, Any]] = {}

    def stack(self, twin: Mapping[str, Any]) -> tuple[str, ...]:
        """Ids of the deployments applied to this twin, in laying-down order; empty if no base targets it."""
        return tuple(d.id for d in select_stack(self._deployments, twin))

    def placement(self, twin: Mapping[str, Any]) -> tuple[tuple[str, ...], list[str]]:
        """:meth:`stack`, and the ids of every deployment whose target condition selects this twin
        (what status counting needs), each target condition evaluated once."""
        matching = [d for d in self._deployments if d.target(twin)]
        return tuple(d.id for d in stack_of(matching)), [d.id for d in matching]

    def targeted(self, deployment_id: str, twin: Mapping[str, Any]) -> bool:
        record = self.records[deployment_id]
        return target(record.target)(twin)

    def compose(self, stack: tuple[str, ...]) -> dict[str, Any]:
        """The effective manifest document of a stack; ManifestError if that combination is invalid."""
        cached = self._composed.get(stack)
        if cached is None:
            by_id = {d.id: d for d in self._deployments}
            try:
                cached = compose([by_id[i] for i in stack]).document
            except ManifestError as exc:
                cached = exc
            self._composed[stack] = cached
        if isinstance(cached, ManifestError):
            raise cached
        return cached

    def signed(self, stack: tuple[str, ...]) -> dict[str, Any]:
        """What a device gets for a stack: its manifest and, when any deployment in it is signed, the
        signed parts it was composed from (``/outpost/parts``, see :mod:`outpost.trust.parts`), so a
        device with a trust root can check that it runs exactly what its operator signed."""
        document = self.compose(stack)
        records = [self.records[i] for i in stack]
        if not any(r.signatures for r in records):
            return document
        cached = self._signed.get(stack)
        if cached is None:
            parts = [Part(r.id, r.content, _signatures(r.signatures)) for r in records]
            cached = self._signed[stack] = with_parts(document, parts)
        return cached

    def assign(self, device_id: str, twin: Mapping[str, Any], overrides: Mapping[str, Override]) -> Assignment:
        """What the device gets: the stack's manifest with operator-set module desired properties merged in
        (and, when the stack is signed, the overrides themselves for the device to verify)."""
        stack = self.stack(twin)
        if overrides:
            etag = etag_of(stack, overrides)
        else:
            etag = self._etags.get(stack) or self._etags.setdefault(stack, etag_of(stack, {}))
        if not stack:
            return Assignment(device_id, etag, stack, None)
        try:
            document = self.signed(stack)
        except ManifestError as exc:
            return Assignment(device_id, etag, stack, None, list(exc.problems))
        if overrides:
            return Assignment(device_id, etag, stack, _overridden(document, overrides))
        text = self._json.get(stack)
        if text is None:
            text = self._json[stack] = json.dumps(document, separators=(",", ":"))
        return Assignment(device_id, etag, stack, document, document_json=text)


def _signatures(entries: Sequence[Any]) -> tuple[Signature, ...]:
    """Stored signatures; a damaged entry is passed on as it is for the device to refuse, never fixed here."""
    found = []
    for entry in entries:
        try:
            found.append(Signature.from_json(entry))
        except ValueError:
            found.append(Signature(str(entry.get("keyId", "?")) if isinstance(entry, dict) else "?", b""))
    return tuple(found)


def _overridden(document: dict[str, Any], overrides: Mapping[str, Override]) -> dict[str, Any]:
    merged = with_overrides(document, {module: o.desired for module, o in overrides.items()})
    if not has_parts(document):
        return merged
    applied = [o for module, o in sorted(overrides.items()) if module in document["modulesContent"]]
    return with_override_entries(merged, applied) if applied else merged
