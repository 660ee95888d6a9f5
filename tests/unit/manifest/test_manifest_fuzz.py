"""Bad input never crashes the checker: mutated manifests give a Report, load_manifest only ManifestError."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from manifest_helpers import CORPUS, load, manifest

from outpost.errors import ManifestError, Problem
from outpost.manifest import Report, check_document, load_manifest

SEEDS: list[Any] = [
    manifest(),
    load(CORPUS / "valid" / "route-sources-and-sinks.json"),
    load(CORPUS / "valid" / "outpost-extensions.json"),
    load(CORPUS / "valid" / "create-options-chunked.json"),
    load(CORPUS / "valid" / "deployment-base-az-show.json"),
    load(CORPUS / "valid" / "deployment-layered-modules-routes-twin.json"),
]

REPLACEMENTS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", " ", "x", "{}", "[]", "{", "FROM", "FROM /* INTO", "createOptions01", "properties.desired.x"]),
    st.text(max_size=12),
    st.just([]),
    st.just({}),
    st.just([{"a": 1}]),
    st.just({"properties.desired": {}}),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "rename", "add"]))
        last = path[-1]
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = copy.deepcopy(draw(REPLACEMENTS))
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10)) + "~/"] = parent.pop(last)
        elif isinstance(parent, dict):
            key = draw(st.sampled_from(["createOptions03", "outpost", "properties.desired.a.b", "$edgeHub", ""]))
            parent[key] = copy.deepcopy(draw(REPLACEMENTS))
    return doc


@settings(max_examples=200, deadline=None)
@given(mutated())
def test_check_document_returns_a_report_for_any_mutation(doc: Any) -> None:
    kind, report = check_document(doc)
    assert kind in {"manifest", "deployment", "layered"}
    assert isinstance(report, Report)
    for problem in report.problems + report.warnings:
        assert problem.pointer == "" or problem.pointer.startswith("/")
        assert problem.message


@settings(max_examples=200, deadline=None)
@given(mutated())
def test_load_manifest_raises_only_manifest_error(doc: Any) -> None:
    text = json.dumps(doc)
    problems: list[Problem] | None = None
    try:
        load_manifest(text)
    except ManifestError as exc:
        problems = exc.problems
    assert problems is None or len(problems) > 0
