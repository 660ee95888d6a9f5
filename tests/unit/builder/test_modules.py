"""module.json in iotedgedev's format: parsed unchanged, every problem named by file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outpost.builder.modules import ModuleSpecError, discover_modules, load_module
from outpost.builder.platforms import platform_named
from outpost.errors import InputError

REPO = Path(__file__).resolve().parents[3]


def _module(tmp_path: Path, doc: object, name: str = "filtermodule", files: tuple[str, ...] = ("Dockerfile",)) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    for f in files:
        (folder / f).write_text("FROM scratch\n")
    (folder / "module.json").write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return folder


def _doc(**image: object) -> dict[str, object]:
    base: dict[str, object] = {
        "repository": "${CONTAINER_REGISTRY_SERVER}/filtermodule",
        "tag": {"version": "0.0.1", "platforms": {"amd64": "./Dockerfile", "arm32v7": "./Dockerfile.arm32v7"}},
        "buildOptions": [],
        "contextPath": "./",
    }
    base.update(image)
    return {"$schema-version": "0.0.1", "description": "", "image": base, "language": "python"}


def test_an_iotedgedev_module_json_reads_unchanged(tmp_path):
    """The file iotedgedev's `new` generates: env placeholders, one Dockerfile per platform, debug variants."""
    doc = _doc()
    doc["image"]["tag"]["platforms"]["amd64.debug"] = "./Dockerfile.amd64.debug"  # type: ignore[index]
    folder = _module(tmp_path, doc, files=("Dockerfile", "Dockerfile.arm32v7"))
    spec = load_module(folder, {"CONTAINER_REGISTRY_SERVER": "localhost:5000"})
    assert spec.name == "filtermodule"
    assert spec.repository == "localhost:5000/filtermodule"
    assert spec.version == "0.0.1"
    assert spec.dockerfiles == {"amd64": folder / "Dockerfile", "arm32v7": folder / "Dockerfile.arm32v7"}
    assert spec.context == folder
    assert spec.tag(platform_named("linux/arm/v7")) == "0.0.1-arm32v7"


def test_every_reference_module_parses():
    specs = discover_modules(REPO / "modules")
    names = {s.name for s in specs}
    assert {"motor-sensor", "fft-filter", "anomaly-detector", "alert-actuator", "edge-hub"} <= names
    by_name = {s.name: s for s in specs}
    assert set(by_name["alert-actuator"].dockerfiles) == {"amd64", "arm64v8", "arm32v7"}
    for name in ("anomaly-detector", "edge-hub"):  # armv7 from Debian's packages and tflite-runtime's wheel
        assert "arm32v7" in by_name[name].dockerfiles
    assert not any(spec.unsupported for spec in specs if spec.name in names)
    assert by_name["motor-sensor"].smoke_test[0] == "python3"


@pytest.mark.parametrize(
    ("image", "pointer", "message"),
    [
        ({"repository": 3}, "/image/repository", "non-empty string"),
        ({"tag": {"platforms": {"amd64": "./Dockerfile"}}}, "/image/tag/version", "non-empty string"),
        ({"tag": {"version": "1", "platforms": {}}}, "/image/tag/platforms", "platform: Dockerfile"),
        ({"tag": {"version": "1", "platforms": {"sparc": "./Dockerfile"}}}, "/image/tag/platforms/sparc", "unknown"),
        ({"tag": {"version": "1", "platforms": {"amd64": "./Nope"}}}, "/image/tag/platforms/amd64", "does not exist"),
        ({"buildOptions": ["--platform linux/arm64"]}, "/image/buildOptions/0", "not allowed"),
        ({"buildOptions": ["--build-arg"]}, "/image/buildOptions/0", "needs a value"),
        ({"contextPath": "../elsewhere"}, "/image/contextPath", "does not exist"),
    ],
)
def test_a_broken_module_json_names_the_file_and_field(tmp_path, image, pointer, message):
    doc = _doc(**image)
    if "tag" not in image:
        doc["image"]["tag"]["platforms"] = {"amd64": "./Dockerfile"}  # type: ignore[index]
    folder = _module(tmp_path, doc)
    with pytest.raises(ModuleSpecError) as caught:
        load_module(folder, {"CONTAINER_REGISTRY_SERVER": "r"})
    assert caught.value.pointer == pointer
    assert message in str(caught.value)
    assert str(folder / "module.json") in str(caught.value)


def test_not_json_and_undefined_variables_are_clear_errors(tmp_path):
    with pytest.raises(ModuleSpecError, match="not valid JSON"):
        load_module(_module(tmp_path, "{nope", name="a"))
    with pytest.raises(InputError, match=r"CONTAINER_REGISTRY_SERVER\} is not defined"):
        load_module(_module(tmp_path, _doc(), name="b", files=("Dockerfile", "Dockerfile.arm32v7")), {})


def test_build_options_are_split_and_checked(tmp_path):
    doc = _doc(buildOptions=["--build-arg A=1", "--label=x=y", "--no-cache"])
    doc["image"]["tag"]["platforms"] = {"amd64": "./Dockerfile"}  # type: ignore[index]
    spec = load_module(_module(tmp_path, doc), {"CONTAINER_REGISTRY_SERVER": "r"})
    assert spec.build_options == ("--build-arg", "A=1", "--label", "x=y", "--no-cache")


def test_unsupported_platforms_and_smoke_test(tmp_path):
    doc = _doc()
    doc["image"]["tag"]["platforms"] = {"amd64": "./Dockerfile"}  # type: ignore[index]
    doc["outpost"] = {"unsupportedPlatforms": {"linux/arm/v7": "no wheel"}, "smokeTest": ["python3", "-V"]}
    spec = load_module(_module(tmp_path, doc), {"CONTAINER_REGISTRY_SERVER": "r"})
    assert spec.unsupported == {"arm32v7": "no wheel"}
    assert spec.smoke_test == ("python3", "-V")
    doc["outpost"] = {"smokeTest": "python3 -V"}
    with pytest.raises(ModuleSpecError, match="list of strings"):
        load_module(_module(tmp_path, doc, name="other"), {"CONTAINER_REGISTRY_SERVER": "r"})


def test_discover_names_missing_modules(tmp_path):
    _module(tmp_path, _doc(), name="a", files=("Dockerfile", "Dockerfile.arm32v7"))
    with pytest.raises(InputError, match="no module named zz"):
        discover_modules(tmp_path, ["zz"])
    with pytest.raises(InputError, match="no such modules folder"):
        discover_modules(tmp_path / "missing")


def test_edge_hub_requirements_are_outposts_own_dependencies():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (REPO / "modules" / "edge-hub" / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == deps
    spec = load_module(REPO / "modules" / "edge-hub")
    assert spec.base_image == "outpost/base-hub:bookworm-{debian}"
