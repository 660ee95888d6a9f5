"""The fleet's rules: who may do what, and what each call changes.

Stateless over a :class:`~outpost.fleet.store.FleetStore`: any number of processes may serve
one database. The only thing kept in memory is a :class:`~outpost.fleet.resolution.Resolver`
for the deployments' current version (rebuilt when the stored version moves), which is
derived data. Called by the HTTP adapter (:mod:`outpost.fleet.adapters.api`) and by tests.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from outpost.errors import ManifestError, Problem, QueryError
from outpost.fleet.credentials import (
    Credential,
    Kind,
    Principal,
    check_device_id,
    check_module_id,
    hash_secret,
    make_credential,
    new_secret,
    parse_credential,
    secret_matches,
)
from outpost.fleet.errors import (
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    UnauthorizedError,
)
from outpost.fleet.models import DeploymentRecord, DeviceRecord, DeviceStatus, HistoryEntry, ModuleTwin, now_utc
from outpost.fleet.queries import compile_query
from outpost.fleet.resolution import Assignment, Resolver, etag_of, target
from outpost.fleet.status import DeviceView, deployment_status
from outpost.fleet.store import FleetStore
from outpost.fleet.twins import device_twin, module_twin, twin_with_modules
from outpost.manifest import check_document
from outpost.trust.parts import carried_signatures
from outpost.trust.signing import Signature
from outpost.wire.patch import merge_patch

__all__ = ["DEPLOYMENT_ID", "SYSTEM_MODULES", "FleetService", "PushRequest"]

DEPLOYMENT_ID = re.compile(r"[a-z0-9\-:+%_#*?!(),=@;$']{1,128}")
"""Azure's configuration id rule: lowercase letters, digits and a few symbols."""
SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")
_RETRIES = 20
T = TypeVar("T")


def _problem(pointer: str, exc: QueryError) -> Problem:
    return Problem(pointer, f"line {exc.line}, column {exc.column}: {exc.reason}")


def _check_target(text: Any, pointer: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidError("a target condition is required", [Problem(pointer, "expected a target condition text")])
    try:
        target(text)
    except QueryError as exc:
        raise InvalidError(f"invalid target condition {text!r}", [_problem(pointer, exc)]) from exc
    return text


def _check_queries(queries: Any, pointer: str) -> dict[str, str]:
    if not isinstance(queries, Mapping):
        raise InvalidError("metrics.queries must be an object", [Problem(pointer, "expected an object of name: query")])
    problems = []
    for name, text in queries.items():
        if not isinstance(text, str):
            problems.append(Problem(f"{pointer}/{name}", "expected a query text"))
            continue
        try:
            compile_query(text)
        except QueryError as exc:
            problems.append(_problem(f"{pointer}/{name}", exc))
    if problems:
        raise InvalidError("invalid metrics queries", problems)
    return {str(k): str(v) for k, v in queries.items()}


def _check_labels(labels: Any, pointer: str) -> dict[str, str]:
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise InvalidError(
            "labels must map names to strings", [Problem(pointer, "expected an object of string values")]
        )
    return dict(labels)


def _check_signatures(given: Any, document: Mapping[str, Any]) -> list[dict[str, str]]:
    """The push's signatures (well-formed; the fleet holds no operator keys, devices verify them) plus
    those a plain signed manifest file carries, one per key."""
    if given is None:
        given = []
    if not isinstance(given, list):
        raise InvalidError("signatures must be a list", [Problem("/signatures", "expected a list of signatures")])
    found: dict[str, dict[str, str]] = {}
    for index, entry in enumerate(given):
        try:
            signature = Signature.from_json(entry)
        except ValueError as exc:
            raise InvalidError("a signature is malformed", [Problem(f"/signatures/{index}", str(exc))]) from exc
        found.setdefault(signature.key_id, signature.to_json())
    for signature in carried_signatures(document):
        found.setdefault(signature.key_id, signature.to_json())
    return list(found.values())


class PushRequest:
    """A push: the user's document unchanged plus what the command line set (which wins)."""

    def __init__(
        self,
        document: Any,
        *,
        name: str | None = None,
        target: str | None = None,
        priority: int | None = None,
        layered: bool = False,
        labels: Mapping[str, str] | None = None,
        signatures: Any = None,
    ) -> None:
        self.document = document
        self.signatures = signatures  # the operator's over the content (``deploy push --sign-key``)
        self.name = name
        self.target = target
        self.priority = priority
        self.layered = layered
        self.labels = dict(labels or {})


class FleetService:
    """Devices, twins, deployments and each device's assignment."""

    def __init__(self, store: FleetStore, *, on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        self._resolver: tuple[int, Resolver] | None = None
        self._lock = threading.Lock()
        self._on_change = on_change or (lambda: None)
        self.on_report: Callable[[str, Mapping[str, Mapping[str, Any]]], None] = lambda _device, _patches: None
        """Called with every stored module report (the console's metric series; must not do I/O)."""
        self.served: Callable[[Assignment], Assignment] = lambda assignment: assignment
        """The assignment as its device receives it (rollouts stamp model download tokens into it)."""

    # -- identities -------------------------------------------------------------------------

    def ensure_operator(self, name: str = "admin") -> Credential | None:
        """Create the first operator; return its credential only if this call created it."""
        if self.store.operator_hash(name) is not None:
            return None
        credential = make_credential(Kind.OPERATOR, name)
        return credential if self.store.add_operator(name, hash_secret(credential.secret)) else None

    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise UnauthorizedError("no credential: send 'Authorization: Bearer <operator token or device credential>'")
        credential = parse_credential(presented)
        if credential is None:
            raise UnauthorizedError("the credential is malformed")
        if credential.kind is Kind.OPERATOR:
            if secret_matches(credential.secret, self.store.operator_hash(credential.name)):
                return Principal(Kind.OPERATOR, credential.name)
            raise UnauthorizedError("the operator token is not valid")
        secrets = self.store.device_secrets(credential.name)
        if secrets is None or not secret_matches(credential.secret, secrets.credential_hash):
            raise UnauthorizedError("the device credential is not valid")
        if secrets.status is DeviceStatus.DISABLED:
            raise ForbiddenError(f"device {credential.name!r} is deactivated; an operator can re-activate it")
        return Principal(Kind.DEVICE, credential.name)

    # -- devices ----------------------------------------------------------------------------

    def add_device(self, who: Principal, device_id: str, tags: Mapping[str, Any]) -> tuple[DeviceRecord, str]:
        """Provision a device; returns it and its activation key (shown once, stored hashed)."""
        who.require_operator()
        check_device_id(device_id)
        if not isinstance(tags, Mapping):
            raise InvalidError("tags must be an object", [Problem("/tags", "expected an object")])
        key = new_secret()
        record = DeviceRecord(id=device_id, tags=dict(tags), created=now_utc())
        self.store.add_device(record, hash_secret(key))
        self._on_change()
        return record, key

    def activate(self, device_id: str, activation_key: str) -> Credential:
        """Trade the activation key, once, for the device's credential."""
        secrets = self.store.device_secrets(device_id)
        if secrets is None or (secrets.activation_hash is None and secrets.credential_hash is None):
            raise UnauthorizedError("unknown device or wrong activation key")
        if secrets.activation_hash is None:
            raise GoneError(f"device {device_id!r} is activated already; its activation key was used")
        if not secret_matches(activation_key, secrets.activation_hash):
            raise UnauthorizedError("unknown device or wrong activation key")
        if secrets.status is DeviceStatus.DISABLED:
            raise ForbiddenError(f"device {device_id!r} is deactivated; an operator can re-activate it")
        credential = make_credential(Kind.DEVICE, device_id)
        if not self.store.activate(device_id, secrets.activation_hash, hash_secret(credential.secret)):
            raise GoneError(f"device {device_id!r} is activated already; its activation key was used")
        return credential

    def set_status(self, who: Principal, device_id: str, status: DeviceStatus) -> dict[str, Any]:
        who.require_operator()
        if not self.store.set_status(device_id, status):
            raise NotFoundError(f"no device {device_id!r}")
        self._on_change()
        return self.twin(who, device_id)

    def _device(self, device_id: str) -> DeviceRecord:
        device = self.store.device(device_id)
        if device is None:
            raise NotFoundError(f"no device {device_id!r}")
        return device

    def twin(self, who: Principal, device_id: str) -> dict[str, Any]:
        who.require_device(device_id)
        device = self._device(device_id)
        return twin_with_modules(device, self.store.module_twins(device_id))

    def list_devices(self, who: Principal, condition: str | None = None) -> list[dict[str, Any]]:
        who.require_operator()
        match = target(_check_target(condition, "/target")) if condition is not None else None
        twins = [device_twin(d) for d in self.store.devices()]
        return [t for t in twins if match is None or match(t)]

    def remove_device(self, who: Principal, device_id: str) -> None:
        who.require_operator()
        if not self.store.delete_device(device_id):
            raise NotFoundError(f"no device {device_id!r}")
        self._on_change()

    def _retry(self, attempt: Callable[[], T | None], what: str) -> T:
        for _ in range(_RETRIES):
            result = attempt()
            if result is not None:
                return result
        raise ConflictError(f"{what}: too many concurrent writers; try again")

    def patch_tags(self, who: Principal, device_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the tags (``null`` removes a tag)."""
        who.require_operator()
        if not isinstance(patch, Mapping):
            raise InvalidError("tags must be an object", [Problem("/tags", "expected an object")])

        def attempt() -> DeviceRecord | None:
            device = self._device(device_id)
            new = replace(device, tags=merge_patch(device.tags, patch), version=device.version + 1)
            return new if self.store.write_device(new, device.version) else None

        self._retry(attempt, f"tags of {device_id}")
        self._on_change()
        return self.twin(who, device_id)

    def report_device(self, who: Principal, device_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """The device patches its own device-level reported properties."""
        who.require_this_device(device_id)
        if not isinstance(patch, Mapping):
            raise InvalidError("reported properties must be an object", [Problem("", "expected an object")])

        def attempt() -> DeviceRecord | None:
            device = self._device(device_id)
            new = replace(device, reported=merge_patch(device.reported, patch), version=device.version + 1)
            return new if self.store.write_device(new, device.version) else None

        return device_twin(self._retry(attempt, f"reported properties of {device_id}"))

    def _patch_desired(self, device_id: str, module_id: str, patch: Mapping[str, Any]) -> ModuleTwin:
        check_module_id(module_id)
        if not isinstance(patch, Mapping):
            raise InvalidError("a twin patch must be an object", [Problem("", "expected an object")])
        self._device(device_id)

        def attempt() -> ModuleTwin | None:
            current = next((m for m in self.store.module_twins(device_id) if m.module_id == module_id), None)
            base = current or ModuleTwin(device_id, module_id)
            new = replace(base, desired=merge_patch(base.desired, patch), desired_version=base.desired_version + 1)
            return new if self.store.write_module(new, current) else None

        return self._retry(attempt, f"twin of {device_id}/{module_id}")

    def set_module_desired(
        self, who: Principal, device_id: str, module_id: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """An operator sets a module's desired properties on one device (reaches it without a redeploy)."""
        who.require_operator()
        if module_id in SYSTEM_MODULES:
            raise InvalidError(f"{module_id}'s desired properties come from deployments; push a deployment instead")
        twin = self._patch_desired(device_id, module_id, patch)
        self._on_change()
        return module_twin(self._device(device_id), twin)

    def report_modules(
        self, who: Principal, device_id: str, patches: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Several modules' reported properties in one transaction (what an agent sends every round).

        Answers the new ``$version`` of each module's reported properties.
        """
        who.require_this_device(device_id)
        if not isinstance(patches, Mapping):
            raise InvalidError("expected an object of module id: patch", [Problem("", "expected an object")])
        for module_id, patch in patches.items():
            check_module_id(module_id)
            if not isinstance(patch, Mapping):
                raise InvalidError("a twin patch must be an object", [Problem(f"/{module_id}", "expected an object")])

        def attempt() -> list[tuple[ModuleTwin, ModuleTwin | None]] | None:
            current = {m.module_id: m for m in self.store.module_twins(device_id)}
            pairs: list[tuple[ModuleTwin, ModuleTwin | None]] = []
            for module_id, patch in patches.items():
                old = current.get(module_id)
                base = old or ModuleTwin(device_id, module_id)
                new = replace(
                    base, reported=merge_patch(base.reported, patch), reported_version=base.reported_version + 1
                )
                pairs.append((new, old))
            return pairs if self.store.write_modules(pairs, (device_id, now_utc())) else None

        pairs = self._retry(attempt, f"reported properties of {device_id}")
        self.on_report(device_id, patches)
        return {"modules": {new.module_id: {"$version": new.reported_version} for new, _ in pairs}}

    # -- assignment -------------------------------------------------------------------------

    def resolver(self) -> Resolver:
        """The resolver for the stored deployments' current version."""
        version = self.store.deployments_version()
        with self._lock:
            if self._resolver is None or self._resolver[0] != version:
                self._resolver = (version, Resolver(self.store.deployments()))
            return self._resolver[1]

    def assignment(self, who: Principal, device_id: str) -> Assignment:
        """What the device should run now (the device itself, or an operator looking)."""
        who.require_device(device_id)
        resolver = self.resolver()
        device = self._device(device_id)
        overrides = {m.module_id: m.desired for m in self.store.module_twins(device_id) if m.desired}
        return resolver.assign(device_id, device_twin(device), overrides)

    def assignments(self, device_ids: Collection[str]) -> dict[str, Assignment]:
        """Assignments of many devices at once (a long-poll wake-up after a push): three queries in all."""
        if not device_ids:
            return {}
        resolver = self.resolver()
        wanted = set(device_ids)
        overrides = self.store.desired_overrides()
        result: dict[str, Assignment] = {}
        for device in self.store.devices():
            if device.id in wanted and device.status is DeviceStatus.ENABLED:
                result[device.id] = resolver.assign(device.id, device_twin(device), overrides.get(device.id, {}))
        return result

    def etag(self, device_id: str) -> str:
        """Cheap re-check for long-polls: the ETag alone (no composition)."""
        return self.assignment(Principal(Kind.DEVICE, device_id), device_id).etag

    # -- deployments ------------------------------------------------------------------------

    def push(self, who: Principal, request: PushRequest) -> DeploymentRecord:
        """Check and store a deployment; invalid input stores nothing."""
        record = self.check_push(who, request)
        entry = HistoryEntry(0, record.created, who.name, "push", record.id,
                             {**record.summary(), "contentHash": record.content_hash})  # fmt: skip
        stored = self.store.add_deployment(record, entry)
        self._on_change()
        return stored

    def check_push(self, who: Principal, request: PushRequest) -> DeploymentRecord:
        """The record a push would store, or InvalidError with every problem; stores nothing (the console's check)."""
        who.require_operator()
        doc = request.document
        if not isinstance(doc, Mapping):
            raise InvalidError("the deployment must be a JSON object", [Problem("", "expected an object")])
        kind, report = check_document(dict(doc))
        if not report.ok:
            raise InvalidError("the deployment is invalid", report.problems)
        content = doc["modulesContent"] if "modulesContent" in doc else doc["content"]["modulesContent"]
        name = request.name or doc.get("id")
        if not isinstance(name, str) or not DEPLOYMENT_ID.fullmatch(name):
            raise InvalidError(
                f"invalid deployment name {name!r}",
                [Problem("/id", "give --name: 1-128 lowercase letters, digits or - : + % _ # * ? ! ( ) , = @ ; $ '")],
            )
        target_text = _check_target(
            request.target if request.target is not None else doc.get("targetCondition"),
            "/targetCondition" if request.target is None else "--target",
        )
        priority = request.priority if request.priority is not None else doc.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
            raise InvalidError(
                "priority must be a non-negative integer", [Problem("/priority", "expected an integer >= 0")]
            )
        if request.layered and kind != "layered":
            raise InvalidError(
                "--layered needs layered content: address values by dot path, e.g. "
                '"properties.desired.modules.NAME" under $edgeAgent',
                [Problem("/modulesContent", "whole properties.desired documents cannot be layered")],
            )
        labels = {**_check_labels(doc.get("labels", {}), "/labels"), **request.labels}
        metrics_doc = doc.get("metrics", {})
        queries = _check_queries(metrics_doc.get("queries", {}) if isinstance(metrics_doc, Mapping) else None,
                                 "/metrics/queries")  # fmt: skip
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        signatures = _check_signatures(request.signatures, doc)
        at = now_utc()
        return DeploymentRecord(
            id=name,
            content=json.loads(canonical),
            target=target_text,
            priority=priority,
            layered=kind == "layered",
            labels=labels,
            metrics=queries,
            created=at,
            created_by=who.name,
            content_hash=hashlib.sha256(canonical.encode()).hexdigest(),
            signatures=signatures,
        )

    def deployments(self, who: Principal) -> list[DeploymentRecord]:
        who.require_operator()
        return sorted(self.store.deployments(), key=lambda d: d.seq)

    def deployment(self, who: Principal, deployment_id: str) -> DeploymentRecord:
        who.require_operator()
        record = self.store.deployment(deployment_id)
        if record is None:
            raise NotFoundError(f"no deployment {deployment_id!r}")
        return record

    def update(self, who: Principal, deployment_id: str, changes: Mapping[str, Any]) -> DeploymentRecord:
        """Change target, priority, labels or metrics; content cannot change."""
        who.require_operator()
        if not isinstance(changes, Mapping):
            raise InvalidError("expected an object", [Problem("", "expected an object")])
        if "content" in changes or "modulesContent" in changes:
            raise ConflictError("a deployment's content is immutable: push it under a new name and delete the old one")
        unknown = sorted(set(changes) - {"targetCondition", "priority", "labels", "metrics"})
        if unknown:
            raise InvalidError(
                f"cannot change {', '.join(unknown)}", [Problem(f"/{unknown[0]}", "not a changeable field")]
            )
        record = self.deployment(who, deployment_id)
        new = record
        if "targetCondition" in changes:
            new = replace(new, target=_check_target(changes["targetCondition"], "/targetCondition"))
        if "priority" in changes:
            priority = changes["priority"]
            if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
                raise InvalidError(
                    "priority must be a non-negative integer", [Problem("/priority", "expected an integer >= 0")]
                )
            new = replace(new, priority=priority)
        if "labels" in changes:
            new = replace(new, labels=_check_labels(changes["labels"], "/labels"))
        if "metrics" in changes:
            metrics = changes["metrics"]
            queries = metrics.get("queries", {}) if isinstance(metrics, Mapping) else None
            new = replace(new, metrics=_check_queries(queries, "/metrics/queries"))
        detail = {key: changes[key] for key in sorted(changes)}
        entry = HistoryEntry(0, now_utc(), who.name, "update", deployment_id, detail)
        if not self.store.update_deployment(new, entry):
            raise NotFoundError(f"no deployment {deployment_id!r}")
        self._on_change()
        return new

    def delete(self, who: Principal, deployment_id: str) -> None:
        who.require_operator()
        entry = HistoryEntry(0, now_utc(), who.name, "delete", deployment_id, {})
        if not self.store.delete_deployment(deployment_id, entry):
            raise NotFoundError(f"no deployment {deployment_id!r}")
        self._on_change()

    def history(self, who: Principal, deployment_id: str | None = None) -> list[HistoryEntry]:
        who.require_operator()
        return self.store.history(deployment_id)

    def status(self, who: Principal, deployment_id: str) -> dict[str, Any]:
        """IoT Hub's system metrics, custom metrics and the failing devices of one deployment."""
        record = self.deployment(who, deployment_id)
        views = self._device_views()
        condition = target(record.target)
        return deployment_status(record, views, [condition(view.twin) for view in views])

    def statuses(self, who: Principal) -> dict[str, dict[str, Any]]:
        """Every deployment's status from one pass over the devices (the console's overview)."""
        records = self.deployments(who)
        views = self._device_views()
        return {r.id: deployment_status(r, views, [target(r.target)(v.twin) for v in views]) for r in records}

    def _device_views(self) -> list[DeviceView]:
        """Every device with its module twins and current assignment, as status counting sees it."""
        resolver = self.resolver()
        by_device: dict[str, list[ModuleTwin]] = {}
        for module in self.store.module_twins():
            by_device.setdefault(module.device_id, []).append(module)
        views: list[DeviceView] = []
        for device in self.store.devices():
            twin = device_twin(device)
            modules = by_device.get(device.id, [])
            overrides = {m.module_id: m.desired for m in modules if m.desired}
            stack = resolver.stack(twin)
            problems: list[Problem] = []
            if stack:
                try:
                    resolver.compose(stack)
                except ManifestError as exc:
                    problems = list(exc.problems)
            assignment = Assignment(device.id, etag_of(stack, overrides), stack, None, problems)
            views.append(DeviceView(twin, [module_twin(device, m) for m in modules], assignment))
        return views
