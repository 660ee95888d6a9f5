"""Admission: may this device run this deployment content? Checked before anything is applied.

With a trust root (keys in the trust store) content must carry a signature by a trusted key
that matches it; unsigned content, content signed only by unknown keys and content changed
after signing are refused with ``ContentRefusedError`` (a ``ManifestError``, so every caller that
already refuses bad manifests without touching what runs refuses these the same way, and the
reason lands in the agent's reported ``lastDesiredStatus``). Without a trust root anything is
admitted. Images named by tag only are a warning, or a refusal under ``requireDigests``.

The agent's composition root hands an ``Admission`` to the reconciler, which calls it where a
new deployment is accepted; offline bundles call it before loading anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outpost.errors import InputError, ManifestError, Problem
from outpost.trust.content import SIGNATURES_POINTER, payload, signatures
from outpost.trust.images import image_refs, is_pinned
from outpost.trust.overrides import accepted_versions
from outpost.trust.parts import check_parts, has_parts
from outpost.trust.signing import Context, VerdictKind, check
from outpost.trust.store import TrustStore

__all__ = ["Admission", "Admitted", "ContentRefusedError"]

log = logging.getLogger("outpost.trust")


class ContentRefusedError(ManifestError):
    """The device's trust policy refuses this content; nothing running was touched."""


@dataclass(frozen=True)
class Admitted:
    """Content that passed: who signed it (empty without a trust root) and warnings."""

    key_id: str = ""
    warnings: tuple[str, ...] = ()


def _warn(text: str) -> None:
    log.warning("%s", text)


def _none() -> Iterable[Mapping[str, Any]]:
    return ()


@dataclass
class Admission:
    """The check, over one trust store. ``require_digests`` None means the store's policy.

    ``device_id`` and ``accepted`` (the documents this device accepted before) check module desired
    properties an operator signed for this one device (:mod:`outpost.trust.overrides`)."""

    store: TrustStore
    require_digests: bool | None = None
    on_warning: Callable[[str], None] = field(default=_warn)
    device_id: str = ""
    accepted: Callable[[], Iterable[Mapping[str, Any]]] = field(default=_none)

    def __call__(self, document: dict[str, Any]) -> Admitted:
        trusted = self.store.trusted()
        problems: list[Problem] = []
        warnings: list[str] = []
        try:
            signer = self._check_signatures(document, trusted, problems)
        except ManifestError:
            raise  # a malformed signature entry, named by its pointer
        except InputError as exc:  # a value JSON cannot carry exactly: it cannot have been signed either
            signer = ""
            problems.append(Problem(SIGNATURES_POINTER, f"refused: {exc}"))
        require = self.store.require_digests if self.require_digests is None else self.require_digests
        for ref in image_refs(document):
            if is_pinned(ref.image):
                continue
            text = f"image {ref.image!r} of module {ref.module} is named by tag only; pin it by digest (NAME@sha256:…)"
            if require:
                problems.append(Problem(ref.pointer, text + " (this device requires digests)"))
            else:
                warnings.append(f"{ref.pointer}: {text} so that what runs is what was signed")
        if problems:
            raise ContentRefusedError(problems)
        for text in warnings:
            self.on_warning(text)
        return Admitted(signer, tuple(warnings))

    def _versions(self) -> dict[str, int]:
        """The newest override version of each module in the documents accepted before."""
        newest: dict[str, int] = {}
        for document in self.accepted():
            for module, version in accepted_versions(document).items():
                newest[module] = max(version, newest.get(module, 0))
        return newest

    def _check_signatures(self, document: dict[str, Any], trusted: dict[str, Any], problems: list[Problem]) -> str:
        """The signer's key id; a refusal's reason added to ``problems``. Nothing to check without trust."""
        signer = ""
        if trusted and has_parts(document) and not signatures(document):
            # a fleet's composition of signed deployments, with overrides signed for this device
            parts = check_parts(document, trusted, device_id=self.device_id, accepted=self._versions())
            if parts.failed is not None:
                first = parts.problems[0]
                problems.append(Problem(first.pointer, _reason(parts.failed.kind, first.message, sorted(trusted))))
            else:
                problems.extend(parts.problems)
            signer = ",".join(sorted(set(parts.signers.values())))
        elif trusted:
            verdict = check(Context.DEPLOYMENT, payload(document), signatures(document), trusted)
            if verdict.ok:
                signer = verdict.key_id
            else:
                problems.append(Problem(SIGNATURES_POINTER, _reason(verdict.kind, verdict.detail, sorted(trusted))))
        return signer


def _reason(kind: VerdictKind, detail: str, trusted: list[str]) -> str:
    keys = ", ".join(trusted)
    match kind:
        case VerdictKind.UNSIGNED:
            what = f" ({detail})" if detail.startswith("deployment ") else ""
            return f"unsigned content refused{what}: this device trusts key(s) {keys}; sign it with `--sign-key`"
        case VerdictKind.UNKNOWN_KEY:
            return f"refused: {detail}; it trusts {keys} (`outpost agent trust list`)"
    return f"refused: {detail}"
