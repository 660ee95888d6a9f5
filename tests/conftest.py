"""Shared test settings: hypothesis runs deterministically so CI failures reproduce."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Real services for integration tests: Mosquitto and Kafka started on 127.0.0.1 by fixtures.
pytest_plugins = [
    "integration.conftest_mosquitto",
    "integration.conftest_kafka",
    "integration.hub_harness",
    "integration.fleet_harness",
    "integration.firmware_harness",
]

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
