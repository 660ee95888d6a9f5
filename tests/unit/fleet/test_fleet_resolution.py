"""The fleet resolves with the manifest package's implementation: same answers as effective_manifest."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from outpost.fleet.models import DeploymentRecord
from outpost.fleet.resolution import Resolver, etag_of
from outpost.manifest import effective_manifest, parse_deployment
from outpost.trust.overrides import Override
from outpost.trust.signing import Signature

REPO = Path(__file__).resolve().parents[3]
PLANT_A = json.loads((REPO / "manifests/groups/plant-a.json").read_text())
LAYER = json.loads((REPO / "manifests/layers/monitoring.json").read_text())
CONTENT = PLANT_A["content"]["modulesContent"]


def _record(i: int, target: str, priority: int, *, layered: bool = False) -> DeploymentRecord:
    content = LAYER["content"]["modulesContent"] if layered else CONTENT
    return DeploymentRecord(
        id=f"d{i}", content=content, target=target, priority=priority, layered=layered,
        created=f"2026-01-01T00:00:{i:02d}.000000Z", seq=i,
    )  # fmt: skip


def _as_manifest_deployment(r: DeploymentRecord) -> object:
    doc = {
        "id": r.id,
        "targetCondition": r.target,
        "priority": r.priority,
        "createdTimeUtc": r.created,
        "content": {"modulesContent": r.content},
    }
    return parse_deployment(doc, default_id=r.id, order=r.seq)


TARGETS = ["*", "tags.site = 'a'", "tags.site = 'b'", "tags.monitoring = 'on'", "properties.reported.arch = 'arm64'"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(TARGETS), st.integers(0, 3), st.booleans()), min_size=1, max_size=6),
    st.sampled_from(["a", "b", "c"]),
    st.booleans(),
    st.sampled_from(["arm64", "amd64"]),
)
def test_resolver_agrees_with_effective_manifest(
    specs: list[tuple[str, int, bool]], site: str, monitoring: bool, arch: str
) -> None:
    records = [_record(i, t, p, layered=layered) for i, (t, p, layered) in enumerate(specs)]
    twin = {
        "deviceId": "gw",
        "tags": {"site": site, "monitoring": "on" if monitoring else "off"},
        "properties": {"reported": {"arch": arch}},
    }
    resolver = Resolver(records)
    assignment = resolver.assign("gw", twin, {})
    deployments = [_as_manifest_deployment(r) for r in records]
    try:
        expected = effective_manifest(deployments, twin)  # type: ignore[arg-type]
    except Exception:
        assert assignment.document is None
        return
    assert assignment.document == expected.document
    assert list(assignment.stack) == [*[d for d in assignment.stack if d == expected.base or d in expected.layers]]
    assert expected.base in assignment.stack


def test_etag_moves_with_the_stack_and_the_operator_overrides_only() -> None:
    one = etag_of(["a"], {})
    assert one == etag_of(["a"], {})
    assert one != etag_of(["b"], {})
    assert one != etag_of(["a"], {"m": Override("gw", "m", 1, {"x": 1})})
    # the same properties signed (or at a new version) are a new document for a trust-rooted device
    unsigned = etag_of(["a"], {"m": Override("gw", "m", 1, {"x": 1})})
    assert unsigned != etag_of(["a"], {"m": Override("gw", "m", 2, {"x": 1})})
    assert unsigned != etag_of(["a"], {"m": Override("gw", "m", 1, {"x": 1}, (Signature("k", b"s"),))})


def test_overrides_reach_only_modules_the_manifest_runs() -> None:
    resolver = Resolver([_record(1, "*", 1)])
    twin = {"deviceId": "gw", "tags": {}, "properties": {"reported": {}}}
    module = next(iter(CONTENT["$edgeAgent"]["properties.desired"]["modules"]))
    got = resolver.assign(
        "gw", twin, {module: Override("gw", module, 1, {"threshold": 7}), "ghost": Override("gw", "ghost", 1, {"x": 1})}
    )
    assert got.document is not None
    assert got.document["modulesContent"][module]["properties.desired"]["threshold"] == 7
    assert "ghost" not in got.document["modulesContent"]
    # the composed manifest shared by every device is untouched
    plain = resolver.assign("gw", twin, {})
    assert plain.document is not None
    assert "threshold" not in plain.document["modulesContent"].get(module, {}).get("properties.desired", {})
