"""The ``outpost`` command line, driven as users drive it (stdout data, stderr prose, exit codes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outpost.cli import app

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.fixture
def manifest() -> dict:
    return json.loads((MANIFESTS / "motor-monitor.json").read_text())


def test_help_lists_commands():
    code, out, _ = run("--help")
    assert code == 0
    assert "manifest" in out
    assert "route" in out


def test_console_script_is_installed():
    exe = shutil.which("outpost", path=str(Path(sys.executable).parent))
    assert exe, "the outpost console script is not installed next to this interpreter"
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("outpost ")


def test_validate_shipped_manifests_ok():
    files = sorted(str(p) for p in MANIFESTS.rglob("*.json") if "schema" not in p.parts)
    assert len(files) >= 4
    code, out, err = run("manifest", "validate", *files)
    assert code == 0, out + err
    assert out == ""
    assert "invalid" not in err


def test_validate_reports_file_pointer_message(tmp_path, manifest):
    fft = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["fft-filter"]
    fft["restartPolicy"] = "sometimes"
    del fft["status"]
    bad = write(tmp_path, "bad.json", manifest)
    good = MANIFESTS / "motor-monitor.json"
    code, out, err = run("manifest", "validate", str(good), str(bad))
    assert code == 1
    lines = out.strip().splitlines()
    base = f"{bad}: /modulesContent/$edgeAgent/properties.desired/modules/fft-filter"
    assert f"{base}/restartPolicy: 'sometimes' is not one of never, on-failure, on-unhealthy, always" in lines
    assert any(line.startswith(f"{base}/status: is required") for line in lines)
    assert len(lines) == 2
    assert "1 of 2 file(s) invalid" in err


def test_validate_json_output(tmp_path, manifest):
    manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["r"] = "FROM /messages/* INTO"
    bad = write(tmp_path, "bad.json", manifest)
    code, out, _ = run("manifest", "validate", "--json", str(bad))
    assert code == 1
    [result] = json.loads(out)
    assert result["valid"] is False
    assert result["kind"] == "manifest"
    [problem] = result["problems"]
    assert problem["pointer"] == "/modulesContent/$edgeHub/properties.desired/routes/r"
    assert problem["message"].startswith("line 1, column ")


def test_validate_invalid_json_text(tmp_path):
    bad = write(tmp_path, "broken.json", '{"modulesContent": {\n  "$edgeAgent": ,\n}}')
    code, out, _ = run("manifest", "validate", str(bad))
    assert code == 1
    assert out.startswith(f"{bad}: /: invalid JSON at line 2, column 17")


def test_validate_warnings_and_strict(tmp_path, manifest):
    fft = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["fft-filter"]
    fft["restartPolicie"] = "always"
    path = write(tmp_path, "typo.json", manifest)
    code, out, _ = run("manifest", "validate", str(path))
    assert code == 0
    assert "warning: unknown field 'restartPolicie' is ignored; did you mean 'restartPolicy'?" in out
    code, _, _ = run("manifest", "validate", "--strict", str(path))
    assert code == 1


def test_validate_missing_file_is_reported_like_a_problem(tmp_path):
    code, out, err = run("manifest", "validate", str(tmp_path / "nope.json"))
    assert code == 1
    assert "nope.json: /: cannot read the file: No such file or directory" in out
    assert "1 of 1 file(s) invalid" in err


def test_show_applies_layer_only_when_targeted():
    base, layer = str(MANIFESTS / "motor-monitor.json"), str(MANIFESTS / "layers" / "monitoring.json")
    code, out, err = run("manifest", "show", base, "--layer", layer, "--tag", "monitoring=on", "--json")
    assert code == 0, err
    result = json.loads(out)
    modules = result["manifest"]["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    assert "metrics-collector" in modules
    assert result["layers"] == ["monitoring-add-on"]
    assert result["sources"]["/$edgeAgent/modules/metrics-collector"] == "monitoring-add-on"
    assert result["sources"]["/$edgeAgent/modules/fft-filter"] == "motor-monitor"
    code, out, _ = run("manifest", "show", base, "--layer", layer, "--tag", "monitoring=off")
    assert code == 0
    doc = json.loads(out)
    assert "metrics-collector" not in doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]


def test_show_group_deployment_with_reported_properties():
    base, layer = str(MANIFESTS / "groups" / "plant-a.json"), str(MANIFESTS / "groups" / "coral-arm64.json")
    tags = ["--tag", "site=plant-a", "--tag", "role=motor-gateway", "--tag", "accelerator=coral-usb"]
    code, out, err = run("manifest", "show", base, "--layer", layer, *tags, "--reported", "arch=arm64")
    assert code == 0, err
    detector = json.loads(out)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["anomaly-detector"]
    assert detector["env"]["OUTPOST_DELEGATE"]["value"] == "edgetpu"
    assert "coral-arm64" in err
    code, out, _ = run("manifest", "show", base, "--layer", layer, *tags, "--reported", "arch=amd64")
    detector = json.loads(out)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["anomaly-detector"]
    assert "env" not in detector


def test_show_no_matching_base_says_what_to_do():
    code, _, err = run("manifest", "show", str(MANIFESTS / "groups" / "plant-a.json"), "--tag", "site=plant-b")
    assert code == 1
    assert "no base deployment targets this device" in err


def test_show_bad_tag_syntax():
    code, _, err = run("manifest", "show", str(MANIFESTS / "motor-monitor.json"), "--tag", "novalue")
    assert code == 2
    assert "Invalid value for '--tag': expects KEY=VALUE, got 'novalue'" in err
    assert "Traceback" not in err


ROUTE = (
    "FROM /messages/modules/fft-filter/outputs/features "
    "WHERE $body.temperature > 60 AND severity = 'high' INTO $upstream"
)


def test_route_check_valid_without_message():
    code, out, _ = run("route", "check", ROUTE, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["valid"] is True
    assert result["sink"] == "$upstream"
    assert "matches" not in result


@pytest.mark.parametrize(
    ("temperature", "severity", "module", "expected"),
    [
        (71.5, "high", "fft-filter", 0),
        (41.0, "high", "fft-filter", 1),
        (71.5, "low", "fft-filter", 1),
        (71.5, "high", "motor-sensor", 1),
    ],
)
def test_route_check_with_message(tmp_path, temperature, severity, module, expected):
    msg = write(tmp_path, "m.json", {"temperature": temperature})
    args = ["route", "check", ROUTE, "--message", str(msg), "--property", f"severity={severity}"]
    code, out, _ = run(*args, "--module", module, "--output", "features", "--json")
    assert code == expected
    assert json.loads(out)["matches"] is (expected == 0)


def test_route_check_brokered_endpoint_destination(tmp_path):
    route = (
        'FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint("/modules/fft/inputs/raw")'
    )
    msg = write(tmp_path, "m.json", {"x": 1})
    code, out, _ = run("route", "check", route, "--message", str(msg))
    assert code == 0
    assert "yes -> module fft input raw" in out


def test_route_check_invalid_route_shows_position():
    code, _, err = run("route", "check", "FROM /messages/* WHERE temperature > INTO $upstream")
    assert code == 2
    assert "line 1, column" in err
    assert "^" in err


def test_device_twin_sign_key_needs_a_change_to_sign(tmp_path: Path) -> None:
    """Usage errors come before any call to the fleet (none runs here)."""
    code, _, err = run("device", "twin", "d1", "--sign-key", str(tmp_path / "operator.key"))
    assert code == 2
    assert "--sign-key signs a change: give --module M and --set KEY=VALUE" in err
    code, _, err = run("device", "twin", "d1", "--module", "m", "--sign-key", str(tmp_path / "operator.key"))
    assert code == 2
