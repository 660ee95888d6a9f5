"""Real fleet processes (``outpost fleet serve``) on SQLite or on a real PostgreSQL, for the fleet's tests.

- ``postgres_cluster`` (session): a private PostgreSQL cluster started by
  ``scripts/services/postgres.sh start DIR`` on 127.0.0.1 (installs Debian's postgresql when
  missing); stopped and removed at the end. A failing script fails the tests that use it.
- ``fleet_db`` (function, parametrized ``sqlite`` / ``postgresql``): a database URL of its own
  (a fresh PostgreSQL database per test), or None for the embedded SQLite default.
- :class:`FleetProcess`: one ``outpost fleet serve`` subprocess on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from integration.conftest_mosquitto import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "services" / "postgres.sh"
OUTPOST = str(Path(sys.executable).with_name("outpost"))


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    """The admin URL of a private PostgreSQL cluster for this session."""
    directory = Path(f"/tmp/outpost-pg-test-{uuid.uuid4().hex[:8]}")
    done = subprocess.run(
        [str(SCRIPT), "start", str(directory)], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/services/postgres.sh start failed:\n{done.stdout}\n{done.stderr}")
    try:
        yield (directory / "url").read_text().strip()
    finally:
        subprocess.run([str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def fresh_database(admin_url: str) -> str:
    """A new, empty database on the cluster; its URL."""
    name = f"fleet_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_db(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    admin: str = request.getfixturevalue("postgres_cluster")
    return fresh_database(admin)


class FleetProcess:
    """``outpost fleet serve`` on 127.0.0.1 and a free port; ``stop()`` ends it."""

    def __init__(
        self,
        state_dir: Path,
        db: str | None = None,
        *,
        port: int | None = None,
        extra: list[str] | None = None,
        scheme: str = "http",
        verify: Any = True,
    ) -> None:
        self.state_dir = state_dir
        self.db = db
        self.port = port or free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.extra = extra or []
        self.verify = verify
        self.log = state_dir.parent / f"fleet-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._clients: list[httpx.Client] = []

    def start(self, timeout: float = 60.0) -> FleetProcess:
        command = [OUTPOST, "fleet", "serve", "--state-dir", str(self.state_dir), "--listen", f"127.0.0.1:{self.port}"]
        if self.db:
            command += ["--db", self.db]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_FLEET")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command + self.extra, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the fleet exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/openapi.json", verify=self.verify, timeout=2).status_code == 401:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"the fleet did not answer within {timeout} s:\n{self.log.read_text()}")

    @property
    def token(self) -> str:
        return (self.state_dir / "operator-token").read_text().strip()

    def client(self, credential: str | None = None) -> httpx.Client:
        """A client with the operator token (default) or the given credential."""
        token = self.token if credential is None else credential
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, verify=self.verify, timeout=30)
        self._clients.append(client)
        return client

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def fleet(tmp_path: Path, fleet_db: str | None) -> Iterator[FleetProcess]:
    process = FleetProcess(tmp_path / "fleet", fleet_db).start()
    try:
        yield process
    finally:
        process.stop()


def add_device(operator: httpx.Client, device_id: str, **tags: Any) -> str:
    """Provision and activate a device; its credential."""
    response = operator.post("/api/v1/devices", json={"deviceId": device_id, "tags": tags})
    assert response.status_code == 201, response.text
    key = response.json()["activationKey"]
    activated = operator.post("/api/v1/activate", json={"deviceId": device_id, "activationKey": key})
    assert activated.status_code == 200, activated.text
    return str(activated.json()["credential"])
