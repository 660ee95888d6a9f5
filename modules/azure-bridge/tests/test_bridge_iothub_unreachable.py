"""The azure-bridge process with the REAL azure-iot-device, pointed at an IoT Hub that is not there.

IoT Hub cannot be reached from these machines, so this is what can be tested honestly: the bridge
runs in its own environment (``requirements.txt``, paho-mqtt 1.x), the hub's ``AzureSink`` talks to
it, and a connection string for ``HostName=127.0.0.1`` (nothing listens on 8883) makes the whole
batch retryable (``UNREACHABLE``) quickly, never invalid, and ``connected()`` stays False.

The bridge's environment is made once per requirements.txt and cached under
``$OUTPOST_CACHE_DIR`` (default ``/var/cache/outpost``). Run: ``.venv/bin/pytest modules/azure-bridge/tests``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpost.hub.adapters.azure_sink import AzureSink
from outpost.hub.sinks import FailureKind
from outpost.hub.store import UPSTREAM, Stored
from outpost.wire.message import Message

BRIDGE = Path(__file__).resolve().parents[1]
REQUIREMENTS = BRIDGE / "requirements.txt"
UNREACHABLE_HUB = "HostName=127.0.0.1;DeviceId=dev1;SharedAccessKey=" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


def _bridge_python() -> Path:
    key = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("OUTPOST_CACHE_DIR", "/var/cache/outpost"))
    venv = cache / f"azure-bridge-venv-{key}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(step)} failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    (venv / ".complete").touch()
    return python


def _port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


@pytest.fixture(scope="module")
def bridge_address() -> Iterator[str]:
    assert _port_closed(8883), "something listens on 127.0.0.1:8883: this test needs that port closed"
    env = dict(os.environ, IOTHUB_CS=UNREACHABLE_HUB, OUTPOST_AZURE_BRIDGE_LISTEN="127.0.0.1:0")
    proc = subprocess.Popen(
        [str(_bridge_python()), str(BRIDGE / "main.py")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # "azure-bridge listening on HOST:PORT"
        if not line.startswith("azure-bridge listening on "):
            pytest.fail(f"the bridge did not start (exit {proc.poll()}): {line!r}", pytrace=False)
        yield line.rsplit(" ", 1)[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def _stored(seq: int) -> Stored:
    message = Message(id=f"m{seq}", body=b"{}", source_device="dev1", source_module="sensor", output="out")
    return Stored(seq=seq, endpoint=UPSTREAM, priority=0, enqueued_at=0.0, expires_at=1e12, message=message)


def test_unreachable_iot_hub_makes_the_batch_retryable(bridge_address: str) -> None:
    sink = AzureSink(bridge_address, connection_string_env="IOTHUB_CS", timeout=15.0)
    try:
        started = time.monotonic()
        result = sink.send([_stored(1), _stored(2), _stored(3)])
        elapsed = time.monotonic() - started
        assert result.retryable == [1, 2, 3], result
        assert (result.succeeded, result.invalid) == ([], [])
        assert result.failure is FailureKind.UNREACHABLE
        assert "ConnectionFailedError" in result.detail
        assert elapsed < 15.0
        assert not sink.connected()
    finally:
        sink.close()


def test_missing_connection_string_variable_is_retryable_not_invalid(bridge_address: str) -> None:
    sink = AzureSink(bridge_address, connection_string_env="NOT_SET_ANYWHERE", timeout=15.0)
    result = sink.send([_stored(1)])
    assert (result.retryable, result.failure) == ([1], FailureKind.INTERNAL)
    assert "NOT_SET_ANYWHERE" in result.detail
