"""The agent's fleet API over HTTP: the device credential, obtained once and kept, then the calls.

With ``--credential-file F`` the credential is read from F. Otherwise it is read from
``STATE/fleet/credential`` (0600) or, on first contact, obtained by presenting the device id and
activation key once and written there. Until that works (the fleet is away) every call raises
:class:`~outpost.wire.fleet.Unreachable` like any other outage, so the link's backoff covers it.
Implements :class:`outpost.agent.fleet_link.FleetApi`; built by :mod:`outpost.agent.service`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from outpost.agent.fleet_link import FleetSettings
from outpost.files import write_atomic
from outpost.wire.adapters.fleet_http import FleetClient
from outpost.wire.fleet import FleetCallError

__all__ = ["ActivatingApi"]


class ActivatingApi:
    """FleetApi that activates the device on first use and keeps its credential."""

    def __init__(self, settings: FleetSettings, device_id: str, state_dir: Path) -> None:
        self.settings = settings
        self.device_id = device_id
        self.stored = state_dir / "fleet" / "credential"
        self._client: FleetClient | None = None
        self._lock = threading.Lock()

    def _credential(self) -> str:
        for path in (self.settings.credential_file, self.stored):
            if path is not None and path.exists():
                text = path.read_text().strip()
                if text:
                    return text
        if not self.settings.activation_key:
            raise FleetCallError(
                f"no device credential in {self.settings.credential_file or self.stored} and no activation key: "
                "pass --activation-key (from `outpost device add`) or --credential-file",
                status=401,
            )
        with FleetClient(self.settings.url, ca_file=self.settings.ca_file) as anonymous:
            try:
                credential = anonymous.activate(self.device_id, self.settings.activation_key)
            except FleetCallError as exc:
                if exc.status == 410:
                    raise FleetCallError(
                        f"device {self.device_id} was activated before but its credential is not in {self.stored}: "
                        "copy it there or pass --credential-file",
                        status=410,
                    ) from exc
                raise
        self.stored.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.settings.credential_file or self.stored
        write_atomic(target, credential + "\n", 0o600, sync_dir=True)
        return credential

    def _api(self) -> FleetClient:
        with self._lock:
            if self._client is None:
                self._client = FleetClient(self.settings.url, self._credential(), ca_file=self.settings.ca_file)
            return self._client

    def _call(self, call: Any) -> Any:
        try:
            return call(self._api())
        except FleetCallError as exc:
            if exc.status == 401:  # a credential that stopped working: read or activate afresh next time
                with self._lock:
                    if self._client is not None:
                        self._client.close()
                    self._client = None
            raise

    def fetch_deployment(self, device_id: str, etag: str | None, wait: float) -> tuple[str, dict[str, Any] | None]:
        result: tuple[str, dict[str, Any] | None] = self._call(lambda c: c.fetch_deployment(device_id, etag, wait))
        return result

    def report_modules(self, device_id: str, patches: Mapping[str, Mapping[str, Any]]) -> None:
        self._call(lambda c: c.report_modules(device_id, patches))

    def report_device(self, device_id: str, patch: Mapping[str, Any]) -> None:
        self._call(lambda c: c.report_device(device_id, patch))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
