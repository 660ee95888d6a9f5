"""The corpus: every valid document checks clean, every invalid one reports exactly what its sidecar says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from manifest_helpers import INVALID, SHIPPED, VALID, expected, ids, is_plain_manifest, load

from outpost.errors import ManifestError, Problem
from outpost.manifest import check_document, load_manifest, parse_json


def _problems(path: Path, *, warnings: bool = False) -> tuple[str, list[Problem]]:
    """What Outpost reports for a file: JSON syntax errors, else check_document's problems (or warnings)."""
    try:
        doc = parse_json(path.read_bytes())
    except ManifestError as exc:
        return "json", exc.problems
    kind, report = check_document(doc)
    return kind, report.warnings if warnings else report.problems


def _assert_reported(want: list[dict[str, str]], found: list[Problem]) -> None:
    assert {p.pointer for p in found} == {w["pointer"] for w in want}, "\n".join(map(str, found))
    for wanted in want:
        messages = [p.message for p in found if p.pointer == wanted["pointer"]]
        assert any(wanted.get("message", "") in m for m in messages), (wanted, messages)


def test_corpus_is_big_enough() -> None:
    assert len(VALID) >= 15
    assert len(INVALID) >= 20
    assert len(SHIPPED) >= 4


@pytest.mark.parametrize("path", VALID + SHIPPED, ids=ids(VALID + SHIPPED))
def test_valid_document_has_no_problems(path: Path) -> None:
    kind, problems = _problems(path)
    assert kind in {"manifest", "deployment", "layered"}
    assert problems == [], "\n".join(map(str, problems))
    want = expected(path, "warnings")
    if want:  # a valid file with a sidecar must give exactly the warnings it lists
        _assert_reported(want, _problems(path, warnings=True)[1])


@pytest.mark.parametrize("path", INVALID, ids=ids(INVALID))
def test_invalid_document_reports_exactly_the_expected_problems(path: Path) -> None:
    want = expected(path)
    assert want, f"{path.name}: sidecar lists no problems"
    _assert_reported(want, _problems(path)[1])


_INVALID_PLAIN = [p for p in INVALID if is_plain_manifest(p) or p.name == "invalid-json-syntax.json"]
_VALID_PLAIN = [p for p in VALID + SHIPPED if is_plain_manifest(p)]


@pytest.mark.parametrize("path", _INVALID_PLAIN, ids=ids(_INVALID_PLAIN))
def test_invalid_plain_manifest_fails_to_load_with_the_same_problems(path: Path) -> None:
    _, problems = _problems(path)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path.read_bytes())
    assert caught.value.problems == sorted(problems, key=lambda p: (p.pointer, p.message))


_POSITION = re.compile(r"^line [1-9][0-9]*, column [1-9][0-9]*: \S")


def test_route_and_target_errors_carry_line_and_column() -> None:
    """Every syntax problem of a route or target condition says where in its text it went wrong."""
    syntax_files = [p for p in INVALID if p.name.startswith(("route-", "deployment-bad-target", "layered-bad-route"))]
    not_syntax = {
        "route-priority-and-ttl.json",
        "route-object-missing-route.json",
        "route-empty-under-1.1.json",
        "route-name-blank.json",
    }
    syntax_files = [p for p in syntax_files if p.name not in not_syntax]
    assert len(syntax_files) >= 7
    for path in syntax_files:
        positioned = [p for p in _problems(path)[1] if _POSITION.match(p.message)]
        assert positioned, f"{path.name}: no problem with a line and column"


def test_invalid_json_reports_position_at_the_document_root() -> None:
    path = next(p for p in INVALID if p.name == "invalid-json-syntax.json")
    with pytest.raises(ManifestError) as caught:
        load(path)
    [problem] = caught.value.problems
    assert problem.pointer == ""
    assert problem.message.startswith("invalid JSON at line 17, column 7")


@pytest.mark.parametrize("path", _VALID_PLAIN, ids=ids(_VALID_PLAIN))
def test_valid_plain_manifest_loads(path: Path) -> None:
    doc = load(path)
    built = load_manifest(doc)
    assert built.edge_agent.system_modules.edge_hub.status == "running"
    assert set(built.all_modules()) == {
        "edgeHub",
        *doc["modulesContent"]["$edgeAgent"]["properties.desired"].get("modules", {}),
    }
