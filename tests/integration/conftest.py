"""Integration tests against real services, started here on a fresh machine (as root).

Every test under tests/integration/ is marked `integration` (deselect with `-m "not integration"`).

Fixtures:
- `docker_engine` (session): installs and starts the Docker engine (scripts/services/docker.sh), builds
  the base image (scripts/services/base-image.sh) and the test images (tests/images/build.sh), once per
  session, then yields a `docker.DockerClient`. A failing script FAILS the tests using it (with the
  script's output); nothing is ever skipped.
- `docker_cleanup` (function): a `LabelScope` unique to the test. Put `scope.labels` on every
  container/volume the test (or the agent under test) creates; they are force-removed after the test.
- `wait_until` (session): `wait_until(predicate, timeout=..., interval=..., what=...)` polls until
  `predicate()` returns something truthy and returns it, or fails the test after `timeout` seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    import docker

REPO = Path(__file__).resolve().parents[2]
INTEGRATION_DIR = Path(__file__).resolve().parent
SETUP_SCRIPTS = (
    REPO / "scripts" / "services" / "docker.sh",
    REPO / "scripts" / "services" / "base-image.sh",
    REPO / "tests" / "images" / "build.sh",
)
DOCKER_URL = "unix:///var/run/docker.sock"
LABEL_KEY = "outpost.test"
DOCKER_SDK_REQUIREMENT = "docker>=7.1,<8"

T = TypeVar("T")
_setup_timings: list[tuple[str, float]] = []


def pytest_configure(config: pytest.Config) -> None:
    # Registered in pyproject too; registering twice is harmless and keeps --strict-markers happy meanwhile.
    config.addinivalue_line("markers", "integration: needs real services")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _setup_timings:
        done = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in _setup_timings)
        terminalreporter.write_line(f"integration setup: {done}")


def _setup_budget(config: pytest.Config) -> float:
    """Seconds the setup scripts may take together: a bit under pytest-timeout's per-test limit, which
    also covers the first test's setup, so a slow script fails with its own output, not a bare timeout."""
    try:
        limit = float(config.getini("timeout") or 0)
    except (ValueError, KeyError):
        limit = 0.0
    return max(limit - 15, 60) if limit > 0 else 900.0


def _run_setup_scripts(budget: float) -> None:
    deadline = time.monotonic() + budget
    for script in SETUP_SCRIPTS:
        name = str(script.relative_to(REPO))
        remaining = deadline - time.monotonic()
        started = time.monotonic()
        try:
            proc = subprocess.run(
                ["bash", str(script)],  # works even if the executable bit got lost
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(remaining, 1),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = _text(exc.stdout) + _text(exc.stderr)
            pytest.fail(f"{name} did not finish within {remaining:.0f} s; its output:\n{output}", pytrace=False)
        except OSError as exc:
            pytest.fail(f"could not run {name}: {exc}", pytrace=False)
        _setup_timings.append((name, time.monotonic() - started))
        if proc.returncode != 0:
            pytest.fail(
                f"{name} failed with exit code {proc.returncode}; its output:\n{proc.stdout}{proc.stderr}",
                pytrace=False,
            )


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


@pytest.fixture(scope="session")
def docker_engine(pytestconfig: pytest.Config) -> Iterator[docker.DockerClient]:
    """A client for the local engine, with outpost/base:bookworm and outpost-test/<name>:{1,2} built."""
    try:
        import docker
    except ImportError:
        pytest.fail(
            f"the Docker SDK for Python is not installed: add {DOCKER_SDK_REQUIREMENT!r} to the dev extras",
            pytrace=False,
        )
    _run_setup_scripts(_setup_budget(pytestconfig))
    client = docker.DockerClient(base_url=DOCKER_URL, timeout=60)
    try:
        client.ping()
        # Containers a killed earlier session left behind.
        for container in client.containers.list(all=True, filters={"label": LABEL_KEY}):
            container.remove(force=True, v=True)
        yield client
    finally:
        client.close()


@dataclass(frozen=True)
class LabelScope:
    """The label that marks everything one test creates: `outpost.test=<unique id>`."""

    value: str
    key: str = LABEL_KEY

    @property
    def labels(self) -> dict[str, str]:
        """For `labels=` of containers.run/create and volumes.create (merge with your own labels)."""
        return {self.key: self.value}

    @property
    def selector(self) -> str:
        """`outpost.test=<id>`, for `docker ... --filter label=<selector>` and the agent's own filters."""
        return f"{self.key}={self.value}"

    @property
    def filters(self) -> dict[str, str]:
        """For `client.containers.list(all=True, filters=scope.filters)`."""
        return {"label": self.selector}


@pytest.fixture
def docker_cleanup(docker_engine: docker.DockerClient, request: pytest.FixtureRequest) -> Iterator[LabelScope]:
    """A label unique to this test; every container and volume carrying it is removed after the test."""
    import docker.errors

    scope = LabelScope(f"{request.node.name[:40]}-{uuid.uuid4().hex[:12]}")
    yield scope
    for container in docker_engine.containers.list(all=True, filters=scope.filters):
        with contextlib.suppress(docker.errors.NotFound):  # already gone (e.g. auto_remove)
            container.remove(force=True, v=True)
    for volume in docker_engine.volumes.list(filters=scope.filters):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)


def _wait_until(
    predicate: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} (last value: {result!r})", pytrace=False)
        time.sleep(interval)


@pytest.fixture(scope="session")
def wait_until() -> Callable[..., object]:
    """`wait_until(predicate, *, timeout=20.0, interval=0.1, what="condition")`: bounded polling."""
    return _wait_until
