"""createOptions: Azure's chunked string form, the template object form, and Docker's view of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from manifest_helpers import AGENT, CORPUS, load, manifest, module

from outpost.errors import ManifestError
from outpost.manifest import check_manifest, load_manifest
from outpost.manifest.create_options import chunk_keys, join_chunks, parse_create_options
from outpost.manifest.models import ModuleSettings

OPTIONS = {
    "Env": ["MODE=fast"],
    "HostConfig": {"Binds": ["/data:/data"], "PortBindings": {"8080/tcp": [{"HostPort": "80"}]}},
}
TEXT = json.dumps(OPTIONS, separators=(",", ":"))


def _split(text: str, parts: int) -> list[str]:
    size = -(-len(text) // parts)
    return [text[i * size : (i + 1) * size] for i in range(parts)]


def test_chunks_are_joined_in_numeric_order_whatever_the_key_order() -> None:
    first, second, third = _split(TEXT, 3)
    settings = {"createOptions02": third, "image": "x", "createOptions01": second, "createOptions": first}
    joined, problems = join_chunks(settings, "/settings")
    assert problems == []
    assert joined == TEXT
    assert json.loads(str(joined)) == OPTIONS


def test_chunk_keys_sort_by_number_not_by_text() -> None:
    settings = {f"createOptions{n:02d}": "" for n in (10, 2, 1, 9, 11)}
    assert chunk_keys(settings) == [
        "createOptions01",
        "createOptions02",
        "createOptions09",
        "createOptions10",
        "createOptions11",
    ]


def test_no_chunks_returns_the_base_value_untouched() -> None:
    assert join_chunks({"createOptions": TEXT}, "/s") == (TEXT, [])
    assert join_chunks({"createOptions": OPTIONS}, "/s") == (OPTIONS, [])
    assert join_chunks({"image": "x"}, "/s") == (None, [])


def test_gap_in_chunk_numbers_names_the_missing_chunk() -> None:
    first, second, third = _split(TEXT, 3)
    _, problems = join_chunks({"createOptions": first, "createOptions01": second, "createOptions03": third}, "/s")
    [problem] = problems
    assert problem.pointer == "/s/createOptions03"
    assert problem.message == (
        "expected createOptions02 next, found createOptions03; chunks must be numbered 01, 02, ... without gaps"
    )


@pytest.mark.parametrize(
    ("base", "word"),
    [(None, "missing"), ({"HostConfig": {}}, "not a string")],
    ids=["missing", "object"],
)
def test_chunks_need_a_string_base(base: Any, word: str) -> None:
    settings: dict[str, Any] = {"createOptions01": TEXT}
    if base is not None:
        settings["createOptions"] = base
    _, problems = join_chunks(settings, "/s")
    [problem] = problems
    assert problem.pointer == "/s/createOptions01"
    assert f"createOptions is {word}" in problem.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"HostConfig": ', "createOptions is not valid JSON: Expecting value at character 16"),
        ("[1, 2]", "createOptions must be a JSON object, got array"),
        ('"text"', "createOptions must be a JSON object, got string"),
        ("null", "createOptions must be a JSON object, got null"),
    ],
)
def test_parse_rejects_what_is_not_a_json_object(value: str, message: str) -> None:
    options, problems, _ = parse_create_options(value, "/p")
    assert options == {}
    assert [(p.pointer, p.message) for p in problems] == [("/p", message)]


def test_object_form_passes_through_and_empty_means_no_options() -> None:
    assert parse_create_options(OPTIONS, "/p") == (OPTIONS, [], [])
    assert parse_create_options("", "/p") == ({}, [], [])
    assert parse_create_options(None, "/p") == ({}, [], [])


def test_unknown_top_level_keys_warn_and_case_is_ignored_as_docker_does() -> None:
    options, problems, warnings = parse_create_options('{"hostconfig": {}, "HostConfg": {}, "Zzz": 1}', "/p")
    assert problems == []
    assert set(options) == {"hostconfig", "HostConfg", "Zzz"}
    assert [w.pointer for w in warnings] == ["/p/HostConfg", "/p/Zzz"]
    assert warnings[0].message == "Docker ignores create option 'HostConfg'; did you mean HostConfig?"


def test_docker_create_options_of_a_chunked_corpus_module() -> None:
    doc = load(CORPUS / "valid" / "create-options-chunked.json")
    settings = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["blobStorage"]["settings"]
    expected = json.loads(settings["createOptions"] + settings["createOptions01"] + settings["createOptions02"])
    built = load_manifest(doc)
    assert built.edge_agent.modules["blobStorage"].settings.docker_create_options() == expected


def test_docker_create_options_of_object_form_and_of_system_modules() -> None:
    doc = load(CORPUS / "valid" / "create-options-object-template.json")
    built = load_manifest(doc)
    hub_options = built.edge_agent.system_modules.edge_hub.settings.docker_create_options()
    assert hub_options["HostConfig"]["PortBindings"]["8883/tcp"] == [{"HostPort": "8883"}]
    assert built.edge_agent.system_modules.edge_agent.settings.docker_create_options() == {}


def test_docker_create_options_without_create_options_is_empty() -> None:
    assert ModuleSettings.model_validate({"image": "x"}).docker_create_options() == {}


def test_docker_create_options_raises_manifest_error_for_a_gap() -> None:
    first, second, third = _split(TEXT, 3)
    settings = ModuleSettings.model_validate(
        {"image": "x", "createOptions": first, "createOptions01": second, "createOptions03": third}
    )
    with pytest.raises(ManifestError) as caught:
        settings.docker_create_options()
    assert [p.pointer for p in caught.value.problems] == ["/settings/createOptions03"]


def test_manifest_check_points_at_the_chunk_and_joins_before_parsing() -> None:
    doc = manifest()
    first, second, third = _split(TEXT, 3)
    module(doc, "sensor")["settings"].update(createOptions=first, createOptions01=second, createOptions02=third)
    assert check_manifest(doc).ok
    module(doc, "sensor")["settings"]["createOptions02"] = third[:-1]
    [problem] = check_manifest(doc).problems
    assert problem.pointer == f"{AGENT}/modules/sensor/settings/createOptions"
    assert problem.message.startswith("createOptions is not valid JSON")


def test_unknown_host_config_keys_warn_too() -> None:
    """Issue 13: an unknown ``HostConfig.Bogus`` is flagged like an unknown top-level key."""
    text = '{"HostConfig": {"Bogus": 1, "binds": [], "PortBinding": {}, "Memory": 1}}'
    _, problems, warnings = parse_create_options(text, "/p")
    assert problems == []
    assert [w.pointer for w in warnings] == ["/p/HostConfig/Bogus", "/p/HostConfig/PortBinding"]
    assert warnings[0].message == "Docker ignores create option 'HostConfig.Bogus'"
    assert (
        warnings[1].message
        == "Docker ignores create option 'HostConfig.PortBinding'; did you mean HostConfig.PortBindings?"
    )
