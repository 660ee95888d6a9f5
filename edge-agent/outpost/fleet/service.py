"""The fleet's rules: who may do what, and what each call changes.

Stateless over a :class:`~outpost.fleet.store.FleetStore`: any number of processes may serve
one database. What is kept in memory is derived and short-lived: a
:class:`~outpost.fleet.resolution.Resolver` for the deployments' current version (the stored
version is re-read at most every ``RESOLVER_TTL`` seconds, at once after a change made here or
announced by the change feed) and the principals of recently checked credentials (``AUTH_TTL``,
forgotten at once when this process or the change feed sees the device change). Neither can
let a deactivated device in: every device call also reads or writes the device's row and
refuses it there. Called by the HTTP adapter (:mod:`outpost.fleet.adapters.api`) and by tests.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
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
    secret_matches_hash,
)
from outpost.fleet.errors import (
    ConflictError,
    FleetError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    UnauthorizedError,
)
from outpost.fleet.models import (
    CountRow,
    DeploymentRecord,
    DeviceRecord,
    DeviceStatus,
    HistoryEntry,
    ModuleTwin,
    now_utc,
)
from outpost.fleet.queries import compile_query
from outpost.fleet.resolution import Assignment, Resolver, etag_of, target, twin_overrides
from outpost.fleet.status import DeviceView, custom_metrics, device_rows, status_document
from outpost.fleet.store import FleetStore
from outpost.fleet.twins import device_twin, module_twin, twin_with_modules
from outpost.manifest import check_document
from outpost.trust.parts import carried_signatures
from outpost.trust.signing import Signature
from outpost.wire.patch import merge_patch

__all__ = ["AUTH_TTL", "DEPLOYMENT_ID", "RESOLVER_TTL", "SYSTEM_MODULES", "Claim", "FleetService", "PushRequest",
           "Report"]  # fmt: skip

DEPLOYMENT_ID = re.compile(r"[a-z0-9\-:+%_#*?!(),=@;$']{1,128}")
"""Azure's configuration id rule: lowercase letters, digits and a few symbols."""
SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")
VERSION_KEY = "$version"
SIGNATURES_KEY = "$signatures"
"""Members of a module desired patch that are not properties: the version it makes and its signatures."""
_RETRIES = 20
AUTH_TTL = 5.0
"""Seconds a checked credential is trusted without the database (deactivation and removal forget it at once)."""
RESOLVER_TTL = 0.1
"""Seconds between re-reads of the stored deployments' version (changes made here apply at once)."""
_AUTH_CACHE_MAX = 200_000
T = TypeVar("T")
Report = tuple[str, Mapping[str, Mapping[str, Any]]] | tuple[str, Mapping[str, Mapping[str, Any]], "Claim"]
"""One device's module reports: ``(device id, {module id: reported patch}[, claim to verify])``."""


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


def _check_signatures(given: Any, document: Mapping[str, Any], pointer: str = "/signatures") -> list[dict[str, str]]:
    """The push's signatures (well-formed; the fleet holds no operator keys, devices verify them) plus
    those a plain signed manifest file carries, one per key."""
    if given is None:
        given = []
    if not isinstance(given, list):
        raise InvalidError("signatures must be a list", [Problem(pointer, "expected a list of signatures")])
    found: dict[str, dict[str, str]] = {}
    for index, entry in enumerate(given):
        try:
            signature = Signature.from_json(entry)
        except ValueError as exc:
            raise InvalidError("a signature is malformed", [Problem(f"{pointer}/{index}", str(exc))]) from exc
        found.setdefault(signature.key_id, signature.to_json())
    for signature in carried_signatures(document):
        found.setdefault(signature.key_id, signature.to_json())
    return list(found.values())


class Claim:
    """A device credential presented for its own device, not checked yet: the report batch that reads the
    device's row checks it (one query for both), and remembers it when it matches."""

    __slots__ = ("key", "secret_hash")

    def __init__(self, key: str, secret_hash: str) -> None:
        self.key = key  # the cache key of the presented text
        self.secret_hash = secret_hash


def _deactivated(device_id: str) -> ForbiddenError:
    return ForbiddenError(f"device {device_id!r} is deactivated; an operator can re-activate it")


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

    def __init__(
        self,
        store: FleetStore,
        *,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._resolver: tuple[int, Resolver] | None = None
        self._resolver_checked = -1.0e18
        self._generation = 0  # bumped by deployments_changed: a check that raced a change does not count
        self._lock = threading.Lock()
        self._counting = threading.Lock()  # one recount at a time in this process
        self._on_change = on_change or (lambda: None)
        self.on_report: Callable[[str, Mapping[str, Mapping[str, Any]]], None] = lambda _device, _patches: None
        """Called with every stored module report (the console's metric series; must not do I/O)."""
        self.served: Callable[[Assignment], Assignment] = lambda assignment: assignment
        """The assignment as its device receives it (rollouts stamp model download tokens into it)."""
        self.serves_unchanged: Callable[[Assignment], bool] = lambda _assignment: True
        """True when ``served`` would return this assignment as it is, without I/O (no thread needed)."""
        self._clock = clock
        self._principals: dict[str, tuple[Principal, float]] = {}  # sha256 of the presented credential
        self._keys: dict[tuple[Kind, str], set[str]] = {}

    # -- caches -------------------------------------------------------------------------------

    def forget(self, device_ids: Iterable[str] | None = None) -> None:
        """Drop cached credentials of these devices (None: of everyone); the change feed calls this too."""
        with self._lock:
            if device_ids is None:
                self._principals.clear()
                self._keys.clear()
                return
            for device_id in device_ids:
                for key in self._keys.pop((Kind.DEVICE, device_id), ()):
                    self._principals.pop(key, None)

    def deployments_changed(self) -> None:
        """Re-read the deployments' version on the next resolution (a change here or on another instance)."""
        with self._lock:
            self._generation += 1
            self._resolver_checked = -1.0e18

    def cached_principal(self, presented: str | None) -> Principal | None:
        """The principal of a credential checked within ``AUTH_TTL`` and not forgotten since, else None."""
        if not presented:
            return None
        hit = self._principals.get(hash_secret(presented))
        return hit[0] if hit is not None and hit[1] > self._clock() else None

    def claim(self, presented: str | None, device_id: str) -> Claim | None:
        """A device credential naming ``device_id`` to be checked by the report batch; None for anything else
        (which goes through :meth:`authenticate`, so forged and foreign credentials get the same answers)."""
        credential = parse_credential(presented) if presented else None
        if credential is None or credential.kind is not Kind.DEVICE or credential.name != device_id:
            return None
        assert presented is not None
        return Claim(hash_secret(presented), hash_secret(credential.secret))

    def _remember(self, presented: str, principal: Principal, *, key: str | None = None) -> Principal:
        key = key or hash_secret(presented)
        with self._lock:
            if len(self._principals) >= _AUTH_CACHE_MAX:
                self._principals.clear()
                self._keys.clear()
            self._principals[key] = (principal, self._clock() + AUTH_TTL)
            self._keys.setdefault((principal.kind, principal.name), set()).add(key)
        return principal

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
        cached = self.cached_principal(presented)
        if cached is not None:
            return cached
        if credential.kind is Kind.OPERATOR:
            if secret_matches(credential.secret, self.store.operator_hash(credential.name)):
                return self._remember(presented, Principal(Kind.OPERATOR, credential.name))
            raise UnauthorizedError("the operator token is not valid")
        secrets = self.store.device_secrets(credential.name)
        if secrets is None or not secret_matches(credential.secret, secrets.credential_hash):
            raise UnauthorizedError("the device credential is not valid")
        if secrets.status is DeviceStatus.DISABLED:
            raise _deactivated(credential.name)
        return self._remember(presented, Principal(Kind.DEVICE, credential.name))

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
        self.forget([device_id])
        if not self.store.set_status(device_id, status):
            raise NotFoundError(f"no device {device_id!r}")
        self.forget([device_id])  # and whatever a request checked meanwhile
        self._on_change()
        return self.twin(who, device_id)

    def _device(self, device_id: str, who: Principal | None = None) -> DeviceRecord:
        """The device's row; refused if ``who`` is that device and it is deactivated (the cache cannot let it in)."""
        device = self.store.device(device_id)
        if device is None:
            raise NotFoundError(f"no device {device_id!r}")
        if who is not None and who.kind is Kind.DEVICE and device.status is DeviceStatus.DISABLED:
            raise _deactivated(device_id)
        return device

    def twin(self, who: Principal, device_id: str) -> dict[str, Any]:
        who.require_device(device_id)
        device = self._device(device_id, who)
        return twin_with_modules(device, self.store.module_twins(device_id))

    def list_devices(self, who: Principal, condition: str | None = None) -> list[dict[str, Any]]:
        who.require_operator()
        match = target(_check_target(condition, "/target")) if condition is not None else None
        twins = [device_twin(d) for d in self.store.devices()]
        return [t for t in twins if match is None or match(t)]

    def remove_device(self, who: Principal, device_id: str) -> None:
        who.require_operator()
        self.forget([device_id])
        if not self.store.delete_device(device_id):
            raise NotFoundError(f"no device {device_id!r}")
        self.forget([device_id])
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
            device = self._device(device_id, who)
            new = replace(device, reported=merge_patch(device.reported, patch), version=device.version + 1)
            return new if self.store.write_device(new, device.version) else None

        return device_twin(self._retry(attempt, f"reported properties of {device_id}"))

    def _patch_desired(
        self, device_id: str, module_id: str, patch: Mapping[str, Any], version: int | None, signatures: list[Any]
    ) -> ModuleTwin:
        check_module_id(module_id)
        self._device(device_id)

        def attempt() -> ModuleTwin | None:
            current = next((m for m in self.store.module_twins(device_id) if m.module_id == module_id), None)
            base = current or ModuleTwin(device_id, module_id)
            if version is not None and version != base.desired_version + 1:
                raise ConflictError(
                    f"the desired properties of {device_id}/{module_id} are at version {base.desired_version}, so "
                    f"this change makes version {base.desired_version + 1}, not {version} as sent (signed): "
                    "they changed meanwhile; read them again and set (sign) again"
                )
            new = replace(base, desired=merge_patch(base.desired, patch), desired_version=base.desired_version + 1,
                          desired_signatures=signatures)  # fmt: skip
            return new if self.store.write_module(new, current) else None

        return self._retry(attempt, f"twin of {device_id}/{module_id}")

    def set_module_desired(
        self, who: Principal, device_id: str, module_id: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """An operator sets a module's desired properties on one device (reaches it without a redeploy).

        The patch may carry ``$version`` (the desired version the change makes: the current one + 1,
        refused with a conflict otherwise) and, with it, ``$signatures``: the operator's over the
        resulting desired document for this device and module (:mod:`outpost.trust.overrides`;
        devices verify them, the fleet holds no operator keys). A change without signatures clears
        the previous ones: the new document is unsigned.
        """
        who.require_operator()
        if module_id in SYSTEM_MODULES:
            raise InvalidError(f"{module_id}'s desired properties come from deployments; push a deployment instead")
        if not isinstance(patch, Mapping):
            raise InvalidError("a twin patch must be an object", [Problem("", "expected an object")])
        version = patch.get(VERSION_KEY)
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            raise InvalidError(
                f"{VERSION_KEY} must be a positive integer", [Problem(f"/{VERSION_KEY}", "expected an integer >= 1")]
            )
        if SIGNATURES_KEY in patch and version is None:
            raise InvalidError(
                f"{SIGNATURES_KEY} needs {VERSION_KEY}: the desired version the signatures are for",
                [Problem(f"/{VERSION_KEY}", "required with signatures")],
            )
        signatures = _check_signatures(patch.get(SIGNATURES_KEY), {}, f"/{SIGNATURES_KEY}")
        rest = {k: v for k, v in patch.items() if k not in (VERSION_KEY, SIGNATURES_KEY)}
        twin = self._patch_desired(device_id, module_id, rest, version, signatures)
        self._on_change()
        return module_twin(self._device(device_id), twin)

    def report_modules(
        self, who: Principal, device_id: str, patches: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Several modules' reported properties in one transaction (what an agent sends every round).

        Answers the new ``$version`` of each module's reported properties.
        """
        self.check_report(who, device_id, patches)
        result = self.report_many([(device_id, patches)])[0]
        if isinstance(result, FleetError):
            raise result
        return result

    @staticmethod
    def check_report(who: Principal, device_id: str, patches: Any) -> None:
        """Refuse a module report that is not the device's own or not ``{module id: object}`` (no I/O)."""
        who.require_this_device(device_id)
        if not isinstance(patches, Mapping):
            raise InvalidError("expected an object of module id: patch", [Problem("", "expected an object")])
        for module_id, patch in patches.items():
            check_module_id(module_id)
            if not isinstance(patch, Mapping):
                raise InvalidError("a twin patch must be an object", [Problem(f"/{module_id}", "expected an object")])

    def report_many(self, reports: Sequence[Report]) -> list[dict[str, Any] | FleetError]:
        """Checked module reports of many devices in one transaction (the report writer's batch).

        Each report's answer (or refusal: the device was removed or deactivated) in order. Reads
        the devices' rows and twins in two queries, writes them compare-and-set in one commit; if
        another writer got there first, reads and tries again, and under lasting contention writes
        each report alone.
        """
        for _ in range(_RETRIES):
            results = self._try_reports(reports)
            if results is not None:
                for report, result in zip(reports, results, strict=True):
                    if not isinstance(result, FleetError):
                        self.on_report(report[0], report[1])  # stored: the console's series may take its numbers
                return results
        if len(reports) > 1:
            return [self.report_many([report])[0] for report in reports]
        return [ConflictError(f"reported properties of {reports[0][0]}: too many concurrent writers; try again")]

    def _try_reports(self, reports: Sequence[Report]) -> list[dict[str, Any] | FleetError] | None:
        version, resolver = self._versioned_resolver()
        ids = sorted({report[0] for report in reports})
        basis = self.store.reports_basis(ids)
        devices, twins, stored_rows = basis.devices, basis.twins, basis.rows
        originals: dict[tuple[str, str], ModuleTwin | None] = {}
        working: dict[tuple[str, str], ModuleTwin] = {}
        touched: dict[str, int] = {}
        results: list[dict[str, Any] | FleetError] = []
        for report in reports:
            device_id, patches = report[0], report[1]
            device = devices.get(device_id)
            claim = report[2] if len(report) > 2 else None
            if claim is not None:
                stored = basis.credential_hashes.get(device_id)
                if device is None or not secret_matches_hash(claim.secret_hash, stored):
                    results.append(UnauthorizedError("the device credential is not valid"))
                    continue
            if device is None:
                results.append(NotFoundError(f"no device {device_id!r}"))
                continue
            if device.status is DeviceStatus.DISABLED:
                results.append(_deactivated(device_id))
                continue
            versions: dict[str, Any] = {}
            for module_id, patch in patches.items():
                key = (device_id, module_id)
                if key not in working:
                    originals[key] = old = twins.get(device_id, {}).get(module_id)
                    working[key] = old or ModuleTwin(device_id, module_id)
                base = working[key]
                working[key] = new = replace(
                    base, reported=merge_patch(base.reported, patch), reported_version=base.reported_version + 1
                )
                versions[module_id] = {"$version": new.reported_version}
            touched[device_id] = device.version
            results.append({"modules": versions})
            if claim is not None:
                self._remember("", Principal(Kind.DEVICE, device_id), key=claim.key)
        if touched:
            rows: dict[str, list[CountRow]] = {}
            for device_id in touched:
                modules = dict(twins.get(device_id, {}))
                modules.update((m, twin) for (d, m), twin in working.items() if d == device_id)
                new_rows = self._rows(resolver, devices[device_id], list(modules.values()))
                if new_rows != stored_rows.get(device_id, []):
                    rows[device_id] = new_rows  # only when an outcome changed: steady reports write no rows
            pairs = [(twin, originals[key]) for key, twin in working.items()]
            at = now_utc()
            touches = [(d, expected, at) for d, expected in touched.items()]
            if not self.store.write_reports(pairs, touches, rows, version):
                self.deployments_changed()  # in case that is why: read the version again
                return None
        return results

    # -- assignment -------------------------------------------------------------------------

    def resolver(self) -> Resolver:
        """The resolver for the stored deployments' current version (re-read at most every RESOLVER_TTL s)."""
        return self._versioned_resolver()[1]

    def _versioned_resolver(self) -> tuple[int, Resolver]:
        now = self._clock()
        current, generation = self._resolver, self._generation
        if current is not None and now - self._resolver_checked < RESOLVER_TTL:
            return current
        version = self.store.deployments_version()
        with self._lock:
            if self._resolver is None or self._resolver[0] != version:
                self._resolver = (version, Resolver(self.store.deployments()))
            if generation == self._generation and now > self._resolver_checked:
                self._resolver_checked = now
            return self._resolver

    def assignment(self, who: Principal, device_id: str) -> Assignment:
        """What the device should run now (the device itself, or an operator looking)."""
        who.require_device(device_id)
        resolver = self.resolver()
        device = self._device(device_id, who)
        return resolver.assign(device_id, device_twin(device), twin_overrides(self.store.module_twins(device_id)))

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
                twins = twin_overrides(overrides.get(device.id, ()))
                result[device.id] = resolver.assign(device.id, device_twin(device), twins)
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
        self.deployments_changed()
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
        self.deployments_changed()
        self._on_change()
        return new

    def delete(self, who: Principal, deployment_id: str) -> None:
        who.require_operator()
        entry = HistoryEntry(0, now_utc(), who.name, "delete", deployment_id, {})
        if not self.store.delete_deployment(deployment_id, entry):
            raise NotFoundError(f"no deployment {deployment_id!r}")
        self.deployments_changed()
        self._on_change()

    def history(self, who: Principal, deployment_id: str | None = None) -> list[HistoryEntry]:
        who.require_operator()
        return self.store.history(deployment_id)

    def status(self, who: Principal, deployment_id: str) -> dict[str, Any]:
        """IoT Hub's system metrics, custom metrics and the failing devices of one deployment.

        Read from the stored count rows (brought up to date first); custom metrics read the
        targeted devices' twins only.
        """
        record = self.deployment(who, deployment_id)
        resolver = self.count()
        rows = self.store.deployment_rows(deployment_id)
        custom: dict[str, Any] = {}
        if record.metrics:
            targeted = [r.device_id for r in rows if r.targeted]
            devices = self.store.devices_by_id(targeted)
            twins = self.store.module_twins_of(targeted)
            views = [self._view(resolver, devices[d], list(twins.get(d, {}).values()))
                     for d in targeted if d in devices]  # fmt: skip
            custom = custom_metrics(record, views)
        return status_document(record, rows, custom)

    def statuses(self, who: Principal) -> dict[str, dict[str, Any]]:
        """Every deployment's status document."""
        return {r.id: self.status(who, r.id) for r in self.deployments(who)}

    def system_metrics(self, who: Principal, *, recount: bool = True) -> dict[str, dict[str, int]]:
        """Every deployment's targeted, applied, successful and failed counts (one GROUP BY; the console's bars).

        ``recount=False``: the rows as they are, without bringing them up to date first (the API's
        background counter does that after every change; a live view then shows a recount in
        progress instead of queueing behind it, or starting one).
        """
        records = self.deployments(who)
        if recount:
            self.count()
        summary = self.store.count_summary()
        zero = {"targetedCount": 0, "appliedCount": 0, "reportedSuccessfulCount": 0, "reportedFailedCount": 0}
        return {r.id: summary.get(r.id, zero) for r in records}

    def connections(self, who: Principal, online_since: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Devices online (activity at or after ``online_since``), offline and never seen: of the whole
        fleet and of each deployment's targeted devices."""
        who.require_operator()
        self.count()
        return self.store.connection_counts(online_since)

    def count(self) -> Resolver:
        """Bring the stored count rows up to the change feed (what changed since the last count); the
        resolver they reflect. Any instance may do it: the store serializes counters; within this
        process one thread counts and the others wait for it (then find nothing left to do)."""
        with self._counting:
            for _ in range(_RETRIES):
                version, resolver = self._versioned_resolver()

                def compute(
                    devices: Sequence[DeviceRecord],
                    twins: Mapping[str, Mapping[str, ModuleTwin]],
                    resolver: Resolver = resolver,
                ) -> dict[str, list[CountRow]]:
                    return {d.id: self._rows(resolver, d, list(twins.get(d.id, {}).values())) for d in devices}

                if self.store.recount(version, compute):
                    return resolver
                self.deployments_changed()
        raise ConflictError("deployments keep changing while counting; try again")

    def _rows(self, resolver: Resolver, device: DeviceRecord, modules: Sequence[ModuleTwin]) -> list[CountRow]:
        twin = device_twin(device)
        stack, targets = resolver.placement(twin)
        return device_rows(self._view(resolver, device, modules, twin=twin, stack=stack), targets)

    @staticmethod
    def _view(
        resolver: Resolver,
        device: DeviceRecord,
        modules: Sequence[ModuleTwin],
        *,
        twin: dict[str, Any] | None = None,
        stack: tuple[str, ...] | None = None,
    ) -> DeviceView:
        """One device with its module twins and current assignment, as status counting sees it (``twin``
        and ``stack``: what the caller worked out already)."""
        twin = device_twin(device) if twin is None else twin
        overrides = twin_overrides(modules)
        stack = resolver.stack(twin) if stack is None else stack
        problems: list[Problem] = []
        if stack:
            try:
                resolver.compose(stack)
            except ManifestError as exc:
                problems = list(exc.problems)
        assignment = Assignment(device.id, etag_of(stack, overrides), stack, None, problems)
        return DeviceView(twin, [module_twin(device, m) for m in sorted(modules, key=lambda m: m.module_id)],
                          assignment)  # fmt: skip
