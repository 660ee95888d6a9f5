"""The integration foundation works: a real engine without the default bridge, and the test images
behave as documented in tests/images/ (health, exit codes, restarts, host networking on loopback)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import docker
import docker.models.containers
import pytest

Container = docker.models.containers.Container
WaitUntil = Callable[..., Any]


def _state(container: Container) -> dict[str, Any]:
    container.reload()
    state: dict[str, Any] = container.attrs["State"]
    return state


def _health(container: Container) -> str:
    return str(_state(container).get("Health", {}).get("Status", "none"))


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_engine_runs_without_default_bridge(docker_engine: docker.DockerClient) -> None:
    names = {network.name for network in docker_engine.networks.list()}
    assert "bridge" not in names
    assert {"host", "none"} <= names
    info = docker_engine.info()
    assert info["Driver"] == "overlay2"  # vfs would make every image build and container start slow


def test_sleeper_is_healthy_and_stops_promptly(
    docker_engine: docker.DockerClient, docker_cleanup: Any, wait_until: WaitUntil
) -> None:
    container = docker_engine.containers.run(
        "outpost-test/sleeper:1", detach=True, network_mode="host", labels=docker_cleanup.labels
    )
    wait_until(lambda: _health(container) == "healthy", timeout=15, what="sleeper to become healthy")

    started = time.monotonic()
    container.stop(timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"sleeper took {elapsed:.1f} s to stop: SIGTERM is not handled"
    assert _state(container)["ExitCode"] == 0


@pytest.mark.parametrize(
    ("image", "environment", "exit_code"),
    [
        ("outpost-test/crasher:1", {"CRASH_AFTER": "0.5", "EXIT_CODE": "7"}, 7),
        ("outpost-test/crasher:1", {"CRASH_AFTER": "0.2"}, 3),
        ("outpost-test/exiter:1", {"EXIT_AFTER": "0.5"}, 0),
    ],
)
def test_exits_with_its_code(
    docker_engine: docker.DockerClient,
    docker_cleanup: Any,
    image: str,
    environment: dict[str, str],
    exit_code: int,
) -> None:
    container = docker_engine.containers.run(
        image, detach=True, network_mode="none", environment=environment, labels=docker_cleanup.labels
    )
    result = container.wait(timeout=20)
    assert result["StatusCode"] == exit_code, container.logs().decode(errors="replace")


def test_crasher_is_restarted_by_restart_policy(
    docker_engine: docker.DockerClient, docker_cleanup: Any, wait_until: WaitUntil
) -> None:
    container = docker_engine.containers.run(
        "outpost-test/crasher:1",
        detach=True,
        network_mode="none",
        environment={"CRASH_AFTER": "0.2"},
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 2},
        labels=docker_cleanup.labels,
    )

    def gave_up() -> bool:
        state = _state(container)
        return state["Status"] == "exited" and container.attrs["RestartCount"] == 2

    wait_until(gave_up, timeout=20, what="crasher to be restarted twice and stay exited")
    assert _state(container)["ExitCode"] == 3


def test_flaky_health_turns_unhealthy(
    docker_engine: docker.DockerClient, docker_cleanup: Any, wait_until: WaitUntil
) -> None:
    container = docker_engine.containers.run(
        "outpost-test/flaky-health:1",
        detach=True,
        network_mode="none",
        environment={"UNHEALTHY_AFTER": "2.5"},
        labels=docker_cleanup.labels,
    )
    wait_until(lambda: _health(container) == "healthy", timeout=10, what="flaky-health to be healthy first")
    wait_until(lambda: _health(container) == "unhealthy", timeout=15, what="flaky-health to turn unhealthy")
    assert _state(container)["Running"]


@pytest.mark.parametrize("tag", ["1", "2"])
def test_http_answers_on_loopback(
    docker_engine: docker.DockerClient, docker_cleanup: Any, wait_until: WaitUntil, tag: str
) -> None:
    port = _free_loopback_port()
    container = docker_engine.containers.run(
        f"outpost-test/http:{tag}",
        detach=True,
        network_mode="host",
        environment={"PORT": str(port)},
        labels=docker_cleanup.labels,
    )

    def healthz() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                body: dict[str, Any] = json.load(response)
                return body
        except OSError:  # refused, reset, timed out (URLError is an OSError too)
            return None

    body = wait_until(healthz, timeout=15, what=f"http container to answer on 127.0.0.1:{port}")
    assert body == {"status": "ok", "version": tag, "port": port}
    wait_until(lambda: _health(container) == "healthy", timeout=15, what="http container to become healthy")


def test_cleanup_label_is_unique_per_test(docker_cleanup: Any) -> None:
    assert docker_cleanup.labels == {"outpost.test": docker_cleanup.value}
    assert docker_cleanup.filters == {"label": f"outpost.test={docker_cleanup.value}"}
