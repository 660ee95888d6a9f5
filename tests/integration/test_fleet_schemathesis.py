"""Schemathesis against the fleet's own OpenAPI document: generated requests never get a server error.

Run as the operator (every route reachable) and as a device, on a real fleet process over SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from integration.fleet_harness import FleetProcess, add_device


@pytest.fixture(scope="module")
def running_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FleetProcess, str]]:
    process = FleetProcess(tmp_path_factory.mktemp("schemathesis") / "fleet").start()
    try:
        with process.client() as operator:
            credential = add_device(operator, "gw", site="plant-a")
        yield process, credential
    finally:
        process.stop()


@pytest.fixture(scope="module")
def fleet_schema(running_fleet: tuple[FleetProcess, str]) -> schemathesis.schemas.BaseSchema:
    process, _ = running_fleet
    spec = httpx.get(process.url + "/openapi.json", headers={"Authorization": f"Bearer {process.token}"}).json()
    schema = schemathesis.openapi.from_dict(spec)
    schema.config.update(base_url=process.url)
    return schema


def test_no_request_gets_a_server_error(
    fleet_schema: schemathesis.schemas.BaseSchema, running_fleet: tuple[FleetProcess, str]
) -> None:
    process, credential = running_fleet
    operations = [result.ok() for result in fleet_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            for token in (process.token, credential):
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error], timeout=30
                )

        call()
    with process.client() as operator:
        scraped = operator.get("/metrics").text
    sent = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scraped.splitlines()
        if line.startswith("outpost_fleet_requests_total")
    )
    assert sent >= 10 * len(operations)  # the generated requests did reach the fleet
