"""Debian's docker-registry (distribution v2) on 127.0.0.1, for the tests that push images.

``serve_registry(root, user=..., password=...)`` installs it (scripts/services/registry.sh), starts it
with its own config, storage and log under ``root`` (htpasswd auth when a user is given), waits until
it answers and yields its address; the registry is stopped on exit. Used by test_build.py and
test_build_push.py.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_registry(
    root: Path, *, user: str | None = None, password: str = "", realm: str = "outpost-tests"
) -> Iterator[str]:
    """A registry storing under ``root``; with ``user``, only that user (and ``password``) gets in."""
    setup = subprocess.run(
        ["bash", str(REPO / "scripts/services/registry.sh")], capture_output=True, text=True, check=False
    )
    assert setup.returncode == 0, f"registry.sh failed:\n{setup.stdout}{setup.stderr}"
    port = _free_port()
    config = (
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    if user is not None:
        htpasswd = root / "htpasswd"
        subprocess.run(["htpasswd", "-Bbc", str(htpasswd), user, password], check=True, capture_output=True)
        config += f"auth:\n  htpasswd:\n    realm: {realm}\n    path: {htpasswd}\n"
    (root / "config.yml").write_text(config)
    log = (root / "registry.log").open("w")
    server = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://{address}/v2/", timeout=5)  # 200, or 401 with auth: it answers
                break
            except requests.ConnectionError:
                assert server.poll() is None, (root / "registry.log").read_text()
            assert time.monotonic() < deadline, (root / "registry.log").read_text()
            time.sleep(0.2)
        yield address
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
        log.close()
