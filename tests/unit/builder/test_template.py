"""iotedgedev's placeholders: ${MODULES.x}, ${MODULES.x.platform}, $VAR and ${VAR}, and .env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outpost.builder.deployment import render_deployment
from outpost.builder.template import TemplateError, expand_document, load_env, parse_dotenv
from outpost.errors import ManifestError

REPO = Path(__file__).resolve().parents[3]
IMAGES = {
    "motor-sensor": {
        "": "127.0.0.1:5000/outpost/motor-sensor@sha256:" + "a" * 64,
        "arm64v8": "127.0.0.1:5000/outpost/motor-sensor@sha256:" + "b" * 64,
    }
}


def test_modules_and_variables_expand_in_keys_and_values():
    doc = {
        "image": "${MODULES.motor-sensor}",
        "arm": "${MODULES.motor-sensor.arm64v8}",
        "${KEY}": "$VALUE and ${VALUE}",
        "route": "FROM /messages/* WHERE $body.x > 1 INTO $upstream",
        "money": "$$5",
        "n": 3,
    }
    out = expand_document(doc, {"KEY": "k", "VALUE": "v"}, source="t.json", modules=IMAGES)
    assert out == {
        "image": IMAGES["motor-sensor"][""],
        "arm": IMAGES["motor-sensor"]["arm64v8"],
        "k": "v and v",
        "route": "FROM /messages/* WHERE $body.x > 1 INTO $upstream",
        "money": "$5",
        "n": 3,
    }


def test_a_value_with_quotes_cannot_change_the_structure():
    out = expand_document({"a": "${X}"}, {"X": '", "injected": "1'}, source="t")
    assert out == {"a": '", "injected": "1'}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${NOPE}", r"\$\{NOPE\} is not defined"),
        ("${MODULES.ghost}", "module 'ghost' was not built in this run"),
        ("${MODULES.motor-sensor.arm32v7}", "no 'arm32v7' image of motor-sensor"),
        ("${MODULEDIR<../x>}", "MODULEDIR placeholders are not supported"),
        ("${not valid}", "not a valid placeholder"),
    ],
)
def test_unexpandable_placeholders_name_the_pointer(value, message):
    with pytest.raises(TemplateError, match=message) as caught:
        expand_document({"a": {"b": [value]}}, {}, source="t.json", modules=IMAGES)
    assert caught.value.where == "/a/b/0"
    assert str(caught.value).startswith("t.json: /a/b/0: ")


def test_modules_placeholders_only_in_templates():
    with pytest.raises(TemplateError, match="only be used in a deployment template"):
        expand_document("${MODULES.x}", {}, source="module.json")


def test_dotenv_parsing_and_environment_precedence(tmp_path):
    text = '# comment\nexport A=1\nB="two words"\nC=x # trailing\nD=\n'
    assert parse_dotenv(text) == {"A": "1", "B": "two words", "C": "x", "D": ""}
    with pytest.raises(TemplateError, match="line 2"):
        parse_dotenv("A=1\nnot a pair\n", source=".env")
    env_file = tmp_path / ".env"
    env_file.write_text("A=from-file\nB=file\n")
    assert load_env(env_file, {"A": "from-env"}) == {"A": "from-env", "B": "file"}
    assert load_env(tmp_path / "missing", {"A": "x"}) == {"A": "x"}


def _template() -> dict:
    doc = json.loads((REPO / "manifests" / "motor-monitor.json").read_text())
    modules = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    modules["motor-sensor"]["settings"]["image"] = "${MODULES.motor-sensor}"
    doc["$schema-template"] = "4.0.0"
    return doc


def test_render_deployment_pins_digests_and_validates():
    out = render_deployment(json.dumps(_template()), IMAGES, {}, source="deployment.template.json")
    modules = out["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    assert modules["motor-sensor"]["settings"]["image"] == IMAGES["motor-sensor"][""]
    assert "$schema-template" not in out


def test_render_deployment_refuses_an_invalid_result():
    doc = _template()
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["motor-sensor"]["restartPolicy"] = "${RP}"
    with pytest.raises(ManifestError) as caught:
        render_deployment(json.dumps(doc), IMAGES, {"RP": "sometimes"}, source="t.json")
    assert any(p.pointer.endswith("/motor-sensor/restartPolicy") for p in caught.value.problems)
    with pytest.raises(TemplateError, match="not valid JSON"):
        render_deployment("{", IMAGES, {}, source="t.json")


def test_the_reference_template_renders_to_a_valid_deployment():
    """deployment.template.json (README's `outpost build --template`): every module by list digest."""
    names = ("motor-sensor", "fft-filter", "anomaly-detector", "alert-actuator")
    images = {n: {"": f"127.0.0.1:5000/outpost/{n}@sha256:" + "c" * 64} for n in names}
    env = {"CONTAINER_REGISTRY_SERVER": "127.0.0.1:5000", "CONTAINER_REGISTRY_USERNAME": "u"}
    env["CONTAINER_REGISTRY_PASSWORD"] = "p"
    text = (REPO / "deployment.template.json").read_text()
    out = render_deployment(text, images, env, source="deployment.template.json")
    modules = out["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    assert {n: m["settings"]["image"] for n, m in modules.items()} == {n: images[n][""] for n in names}
    assert all(m["imagePullPolicy"] == "on-create" for m in modules.values())
