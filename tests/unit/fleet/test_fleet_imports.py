"""Upstream imports into the fleet: only with the registered device key, duplicates and stale exports dropped."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from outpost.bundle.upstream import export_upstream, import_upstream
from outpost.fleet.adapters.database import SqlStore
from outpost.fleet.adapters.device_keys import SqlDeviceKeyStore
from outpost.fleet.credentials import Kind, Principal
from outpost.fleet.errors import ConflictError, ForbiddenError, InvalidError
from outpost.fleet.imports import UpstreamImports
from outpost.fleet.service import FleetService
from outpost.hub.adapters.sqlite_store import SqliteStore
from outpost.hub.sinks import SinkResult
from outpost.trust.keys import device_key, public_pem

OPERATOR = Principal(Kind.OPERATOR, "admin")


class _Taking:
    """A sink that takes everything (the fleet half is what is tested here)."""

    name = "test"

    def send(self, batch: Any) -> SinkResult:
        return SinkResult(succeeded=[s.seq for s in batch])

    def close(self) -> None:
        pass


@pytest.fixture
def imports(tmp_path: Path) -> UpstreamImports:
    store = SqlStore.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    service = FleetService(store)
    service.ensure_operator()
    return UpstreamImports(service, SqlDeviceKeyStore(store.engine))


def _proof(tmp_path: Path, state: Path, device: str, reported: dict[str, Any], at: float) -> dict[str, Any]:
    hub = SqliteStore(tmp_path / f"hub-{at}.db")
    out = tmp_path / f"up-{at}.tar"
    export_upstream(hub, device_id=device, reported=reported, key=device_key(state), output=out, now=lambda: at)
    hub.close()
    ledger = SqliteStore(tmp_path / f"ledger-{at}.db")
    imported = import_upstream(out, store=ledger, sink=_Taking())  # type: ignore[arg-type]
    ledger.close()
    return imported.proof


def test_only_the_registered_key_and_each_export_once(imports: UpstreamImports, tmp_path: Path) -> None:
    imports.service.add_device(OPERATOR, "gw-1", {})
    state, stranger = tmp_path / "gw-1", tmp_path / "other"
    now = time.time()
    reported = {"$edgeAgent": {"lastDesiredStatus": {"code": 200}}, "modules": {"alpha": {"rpm": 1480}}}
    proof = _proof(tmp_path, state, "gw-1", reported, now - 60)

    with pytest.raises(ConflictError, match="no signing key is registered"):
        imports.import_reported(OPERATOR, "gw-1", proof)
    imports.set_key(OPERATOR, "gw-1", public_pem(device_key(stranger).public_key()).decode())
    with pytest.raises(InvalidError, match="key registered for 'gw-1'"):
        imports.import_reported(OPERATOR, "gw-1", proof)
    with pytest.raises(ForbiddenError):
        imports.set_key(Principal(Kind.DEVICE, "gw-1"), "gw-1", "x")

    imports.set_key(OPERATOR, "gw-1", public_pem(device_key(state).public_key()).decode())
    changed = dict(proof, reported=base64.b64encode(json.dumps({"modules": {"alpha": {"rpm": 0}}}).encode()).decode())
    with pytest.raises(InvalidError, match="does not match the signed index"):
        imports.import_reported(OPERATOR, "gw-1", changed)

    first = imports.import_reported(OPERATOR, "gw-1", proof)
    assert first["applied"] is True
    assert first["modules"] == ["$edgeAgent", "alpha"]
    twin = imports.service.twin(OPERATOR, "gw-1")
    assert twin["modules"]["alpha"]["properties"]["reported"]["rpm"] == 1480
    again = imports.import_reported(OPERATOR, "gw-1", proof)
    assert again["applied"] is False
    assert again["duplicate"] is True

    older = _proof(tmp_path, state, "gw-1", {"modules": {"alpha": {"rpm": 1}}}, now - 3600)
    assert imports.import_reported(OPERATOR, "gw-1", older)["applied"] is False
    assert imports.service.twin(OPERATOR, "gw-1")["modules"]["alpha"]["properties"]["reported"]["rpm"] == 1480

    # another device's export under this device's id is refused; so is a key for a re-created device
    other = _proof(tmp_path, state, "gw-2", reported, now - 30)
    with pytest.raises(InvalidError, match="from device 'gw-2'"):
        imports.import_reported(OPERATOR, "gw-1", other)
    imports.service.remove_device(OPERATOR, "gw-1")
    time.sleep(0.01)
    imports.service.add_device(OPERATOR, "gw-1", {})
    newer = _proof(tmp_path, state, "gw-1", reported, now - 10)
    with pytest.raises(ConflictError):
        imports.import_reported(OPERATOR, "gw-1", newer)
