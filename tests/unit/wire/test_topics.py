"""Every topic the builders make parses back to its record; other topics parse to None."""

from __future__ import annotations

import pytest

from outpost.hub.endpoint import UPSTREAM, Endpoint
from outpost.wire import topics
from outpost.wire.topics import ModuleChannel as Ch

D, M = "dev1", "filter"
LeafCh = topics.LeafChannel


@pytest.mark.parametrize(
    ("built", "record"),
    [
        (topics.output_topic(D, M, "temp"), topics.ModuleOutput(D, M, "temp")),
        (topics.output_topic(D, M, "a/b"), topics.ModuleOutput(D, M, "a/b")),
        (f"devices/{D}/modules/{M}/outputs/", topics.ModuleOutput(D, M, "")),
        (topics.input_topic(D, M, "in1"), topics.ModuleInput(D, M, "in1")),
        (topics.batch_outputs(D, M), topics.BatchOutputs(D, M)),
        (topics.batch_inputs(D, M), topics.BatchInputs(D, M)),
        (topics.leaf_events("leaf1"), topics.LeafEvents("leaf1")),
        (topics.leaf_events("leaf1") + "a=1&b=x%20y", topics.LeafEvents("leaf1", (("a", "1"), ("b", "x y")))),
        (topics.receipts(D, M), topics.ModuleTopic(D, M, Ch.RECEIPTS)),
        (topics.acks(D, M), topics.ModuleTopic(D, M, Ch.ACKS)),
        (topics.status(D, M), topics.ModuleTopic(D, M, Ch.STATUS)),
        (topics.desired(D, M), topics.ModuleTopic(D, M, Ch.DESIRED)),
        (topics.desired_patch(D, M), topics.ModuleTopic(D, M, Ch.DESIRED_PATCH)),
        (topics.reported(D, M), topics.ModuleTopic(D, M, Ch.REPORTED)),
        (topics.method_request(D, M, "reset"), topics.MethodRequest(D, M, "reset")),
        (topics.method_response(D, M, "caller", "ab12"), topics.MethodResponse(D, M, "caller/ab12")),
        (topics.leaf_topic("leaf1", LeafCh.DESIRED), topics.LeafTopic("leaf1", LeafCh.DESIRED)),
        (topics.leaf_topic("leaf1", LeafCh.DESIRED_PATCH), topics.LeafTopic("leaf1", LeafCh.DESIRED_PATCH)),
        (topics.leaf_topic("leaf1", LeafCh.REPORTED), topics.LeafTopic("leaf1", LeafCh.REPORTED)),
        (topics.leaf_method_request("leaf1", "valve"), topics.LeafMethodRequest("leaf1", "valve")),
        (topics.method_response(D, "leaf1", "$hub", "ab12"), topics.MethodResponse(D, "leaf1", "$hub/ab12")),
    ],
)
def test_parse_reads_back_what_the_builders_make(built: str, record: topics.Topic) -> None:
    assert topics.parse(built) == record


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "devices",
        f"devices/{D}/modules/{M}/outputs",
        f"devices/{D}/modules/{M}/inputs",
        f"devices/{D}/modules/{M}/batch",
        f"devices/{D}/modules/{M}/twin",
        f"devices/{D}/modules/{M}/twin/desired/other",
        f"devices/{D}/modules/{M}/methods",
        "devices/leaf1/twin",
        "devices/leaf1/twin/desired/other",
        "devices/leaf1/methods",
        f"devices/{D}/other/{M}",
        "$SYS/broker/uptime",
        f"other/{D}/modules/{M}/outputs/x",
    ],
)
def test_anything_else_is_none(topic: str) -> None:
    assert topics.parse(topic) is None


def test_filters() -> None:
    assert topics.all_outputs(D) == f"devices/{D}/modules/+/outputs/#"
    assert topics.all_leaf_events() == "devices/+/messages/events/#"
    assert topics.all_leaf_reported() == "devices/+/twin/reported"
    assert topics.desired_all(D, M) == f"devices/{D}/modules/{M}/twin/desired/#"
    assert topics.method_requests(D, M) == f"devices/{D}/modules/{M}/methods/#"
    assert topics.method_responses(D, M) == f"devices/{D}/methodres/+/{M}/#"


def test_endpoints_as_text_and_back() -> None:
    beta = Endpoint.module_input("beta", "in")
    assert str(beta) == "module:beta/in"
    assert Endpoint.parse("module:beta/in") == beta
    assert beta.label == "beta/in"
    assert not beta.is_upstream
    assert str(Endpoint.upstream()) == UPSTREAM
    assert Endpoint.parse(UPSTREAM) == Endpoint.upstream()
    assert Endpoint.upstream().label == "$upstream"
    for junk in ("module:", "module:beta", "module:/in", "module:beta/", "beta/in", "Upstream", ""):
        assert Endpoint.parse(junk) is None
