"""The route table: sources, conditions, priority/TTL selection, one delivery per endpoint, unrouted."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from outpost.errors import QueryError
from outpost.hub.routing import RouteTable
from outpost.hub.store import UPSTREAM, Delivery, module_endpoint
from outpost.manifest.models import DEFAULT_ROUTE_PRIORITY, EdgeHubDesired
from outpost.wire.message import Message

NOW = 1_000.0
GLOBAL_TTL = 7200
LOW = DEFAULT_ROUTE_PRIORITY
JSON = {"contentType": "application/json", "contentEncoding": "utf-8"}
FILTER = 'BrokeredEndpoint("/modules/filter/inputs/in1")'
FILTER_IN = module_endpoint("filter", "in1")


def table(routes: dict[str, Any], ttl: int = GLOBAL_TTL) -> RouteTable:
    hub = EdgeHubDesired.model_validate(
        {"schemaVersion": "1.1", "routes": routes, "storeAndForwardConfiguration": {"timeToLiveSecs": ttl}}
    )
    return RouteTable.from_desired(hub)


def module_message(module: str = "sensor", output: str = "temp", **kwargs: Any) -> Message:
    return Message(
        id="m1", body=kwargs.pop("body", b"{}"), source_device="dev1", source_module=module, output=output, **kwargs
    )


LEAF = Message(id="l1", body=b"{}", source_device="leaf7")

# (source, does a message from sensor/temp match, does sensor/other, does pump/temp, does a leaf device)
SOURCES = [
    ("/*", True, True, True, True),
    ("/messages/*", True, True, True, True),
    ("/messages/modules/*", True, True, True, False),
    ("/messages/modules/sensor/*", True, True, False, False),
    ("/messages/modules/sensor/outputs/*", True, True, False, False),
    ("/messages/modules/sensor/outputs/temp", True, False, False, False),
    ("/twinChangeNotifications", False, False, False, False),
]


@pytest.mark.parametrize(("source", "temp", "other", "pump", "leaf"), SOURCES)
def test_every_source_form(source: str, temp: bool, other: bool, pump: bool, leaf: bool) -> None:
    routes = table({"r": f"FROM {source} INTO $upstream"})
    expected = [Delivery(UPSTREAM, LOW, NOW + GLOBAL_TTL)]
    cases = [
        (module_message("sensor", "temp"), temp),
        (module_message("sensor", "other"), other),
        (module_message("pump", "temp"), pump),
        (LEAF, leaf),
    ]
    for message, matches in cases:
        assert routes.deliveries(message, NOW) == (expected if matches else []), message


@pytest.mark.parametrize(
    ("condition", "message", "matches"),
    [
        ("severity = 'high'", module_message(properties={"severity": "high"}), True),
        ("severity = 'high'", module_message(properties={"severity": "low"}), False),
        ("severity = 'high'", module_message(), False),
        ("$body.temperature > 50", module_message(body=b'{"temperature": 72}', system=JSON), True),
        ("$body.temperature > 50", module_message(body=b'{"temperature": 12}', system=JSON), False),
        ("$body.temperature > 50", module_message(body=b'{"temperature": 72}'), False),  # body not JSON-typed
        ("$connectionModuleId = 'sensor'", module_message(), True),
        ("$connectionDeviceId = 'dev1'", module_message(), True),
        ("$messageId = 'm1'", module_message(), True),
        ("NOT is_defined($connectionModuleId)", LEAF, True),
    ],
)
def test_conditions(condition: str, message: Message, matches: bool) -> None:
    routes = table({"r": f"FROM /messages/* WHERE {condition} INTO {FILTER}"})
    assert routes.deliveries(message, NOW) == ([Delivery(FILTER_IN, LOW, NOW + GLOBAL_TTL)] if matches else [])


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        pytest.param(
            {"s": "FROM /* INTO $upstream"}, (LOW, GLOBAL_TTL), id="string route: lowest priority, global TTL"
        ),
        pytest.param({"o": {"route": "FROM /* INTO $upstream", "priority": 3}}, (3, GLOBAL_TTL), id="object, no TTL"),
        pytest.param(
            {"o": {"route": "FROM /* INTO $upstream", "priority": 0, "timeToLiveSecs": 60}}, (0, 60), id="route TTL"
        ),
        pytest.param(
            {"o": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": 0}}, (LOW, GLOBAL_TTL), id="TTL 0 means global"
        ),
        pytest.param(
            {
                "a": {"route": "FROM /* INTO $upstream", "priority": 5, "timeToLiveSecs": 86_400},
                "b": {"route": "FROM /messages/modules/sensor/* INTO $upstream", "priority": 1, "timeToLiveSecs": 30},
                "c": "FROM /messages/* INTO $upstream",
            },
            (1, 86_400),
            id="same endpoint thrice: best priority, longest TTL",
        ),
        pytest.param(
            {
                "a": {"route": "FROM /* WHERE severity = 'high' INTO $upstream", "priority": 0, "timeToLiveSecs": 10},
                "b": {"route": "FROM /* INTO $upstream", "priority": 4, "timeToLiveSecs": 20},
            },
            (0, 20),
            id="conditional and unconditional routes merge too",
        ),
    ],
)
def test_priority_and_ttl(routes: dict[str, Any], expected: tuple[int, int]) -> None:
    message = module_message(properties={"severity": "high"})
    priority, ttl = expected
    assert table(routes).deliveries(message, NOW) == [Delivery(UPSTREAM, priority, NOW + ttl)]


def test_one_delivery_per_endpoint_and_several_endpoints() -> None:
    routes = table(
        {
            "up": "FROM /messages/* INTO $upstream",
            "f1": {"route": f"FROM /messages/modules/sensor/* INTO {FILTER}", "priority": 2},
            "f2": {
                "route": f"FROM /messages/modules/sensor/outputs/temp WHERE hot = 'yes' INTO {FILTER}",
                "priority": 0,
            },
            "other": 'FROM /messages/modules/pump/* INTO BrokeredEndpoint("/modules/alarm/inputs/in")',
        }
    )
    got = routes.deliveries(module_message(properties={"hot": "yes"}), NOW)
    assert sorted(got, key=lambda d: d.endpoint) == [
        Delivery(FILTER_IN, 0, NOW + GLOBAL_TTL),
        Delivery(UPSTREAM, LOW, NOW + GLOBAL_TTL),
    ]
    cold = routes.deliveries(module_message(properties={"hot": "no"}), NOW)
    assert sorted(cold, key=lambda d: d.endpoint) == [
        Delivery(FILTER_IN, 2, NOW + GLOBAL_TTL),
        Delivery(UPSTREAM, LOW, NOW + GLOBAL_TTL),
    ]
    assert routes.endpoints() == [module_endpoint("alarm", "in"), FILTER_IN, UPSTREAM]


@pytest.mark.parametrize(
    "routes",
    [
        {},
        {"r": "FROM /messages/modules/other/* INTO $upstream"},
        {"r": "FROM /messages/* WHERE severity = 'high' INTO $upstream"},
        {"r": "FROM /twinChangeNotifications INTO $upstream"},
    ],
)
def test_unrouted(routes: dict[str, Any]) -> None:
    assert table(routes).deliveries(module_message(), NOW) == []


def test_expiry_follows_now() -> None:
    routes = table({"r": {"route": "FROM /* INTO $upstream", "timeToLiveSecs": 5}})
    assert routes.deliveries(module_message(), 10.0) == [Delivery(UPSTREAM, LOW, 15.0)]
    assert routes.deliveries(module_message(), 20.5) == [Delivery(UPSTREAM, LOW, 25.5)]


def test_bad_route_is_a_query_error() -> None:
    with pytest.raises(QueryError):
        table({"r": "FROM /messages/modules/x/ INTO $upstream"})


def test_many_distinct_sources_and_threads_agree() -> None:
    routes = table(
        {
            "a": "FROM /messages/modules/m7/* INTO $upstream",
            "b": {"route": f"FROM /messages/* WHERE n = '3' INTO {FILTER}", "priority": 1},
        }
    )
    errors: list[str] = []

    def work(offset: int) -> None:
        for i in range(offset, 6000, 3):
            message = module_message(f"m{i % 10}", f"out{i}", properties={"n": str(i % 5)})
            endpoints = sorted(d.endpoint for d in routes.deliveries(message, NOW))
            expected = sorted(([UPSTREAM] if i % 10 == 7 else []) + ([FILTER_IN] if i % 5 == 3 else []))
            if endpoints != expected:
                errors.append(f"{i}: {endpoints}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
