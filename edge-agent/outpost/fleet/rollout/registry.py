"""The model registry: immutable model versions with their sha256, size and metadata.

``outpost model push`` stores a model once per (name, version); pushing the same version again
is refused (409), so a rollout's ``motor@2`` always means the same bytes. Devices download with
their own credential; the HTTP adapter serves byte ranges so a broken download resumes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from outpost.errors import Problem
from outpost.fleet.credentials import Principal
from outpost.fleet.errors import ConflictError, InvalidError, NotFoundError
from outpost.fleet.models import now_utc
from outpost.fleet.rollout.store import ModelRecord, RolloutStore

__all__ = ["MODEL_NAME", "ModelRegistry", "parse_ref"]

MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
MODEL_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_MODEL_BYTES = 256 * 1024 * 1024


def _check(name: str, version: str) -> None:
    problems = []
    if not MODEL_NAME.fullmatch(name):
        problems.append(Problem("--name", "1-128 lowercase letters, digits, . _ - (starting with a letter or digit)"))
    if not MODEL_VERSION.fullmatch(version):
        problems.append(Problem("--version", "1-64 letters, digits, . _ - (starting with a letter or digit)"))
    if problems:
        raise InvalidError(f"invalid model name or version {name!r}@{version!r}", problems)


def parse_ref(ref: str, pointer: str = "--model") -> tuple[str, str]:
    """``motor@2`` -> ("motor", "2")."""
    name, sep, version = ref.partition("@")
    if not sep:
        raise InvalidError(
            f"invalid model reference {ref!r}", [Problem(pointer, "expected NAME@VERSION, e.g. motor@2")]
        )
    _check(name, version)
    return name, version


class ModelRegistry:
    def __init__(self, store: RolloutStore) -> None:
        self.store = store

    def push(
        self, who: Principal, name: str, version: str, content: bytes, metadata: Mapping[str, Any] | None = None
    ) -> ModelRecord:
        who.require_operator()
        _check(name, version)
        if not content:
            raise InvalidError("the model file is empty", [Problem("FILE", "expected a model file (e.g. .tflite)")])
        if len(content) > MAX_MODEL_BYTES:
            raise InvalidError("the model file is too large", [Problem("FILE", f"at most {MAX_MODEL_BYTES} bytes")])
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidError("model metadata must be a JSON object", [Problem("--metadata", "expected an object")])
        record = ModelRecord(
            name=name,
            version=version,
            sha256=hashlib.sha256(content).hexdigest(),
            size=len(content),
            metadata=dict(metadata or {}),
            created=now_utc(),
            created_by=who.name,
        )
        if not self.store.add_model(record, content):
            raise ConflictError(f"model {name}@{version} exists; versions are immutable, push a new version")
        return record

    def models(self, who: Principal) -> list[ModelRecord]:
        who.require_operator()
        return self.store.models()

    def model(self, who: Principal, name: str, version: str) -> ModelRecord:
        """Operators and devices (a device downloads what its deployment names)."""
        del who  # authenticated by the caller; any operator or enabled device may read models
        record = self.store.model(name, version)
        if record is None:
            raise NotFoundError(f"no model {name}@{version}; `outpost model list` shows what is registered")
        return record

    def content(self, who: Principal, name: str, version: str, start: int = 0, end: int | None = None) -> bytes:
        record = self.model(who, name, version)
        last = record.size - 1 if end is None else min(end, record.size - 1)
        data = self.store.model_content(name, version, start, last)
        if data is None:
            raise NotFoundError(f"no model {name}@{version}")
        return data
