"""`outpost build`'s refusals of bad input: exit 2 and a message naming the place, before any engine work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outpost.cli import app

REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["build", *args], env=env)
    return result.exit_code, result.stderr


def test_help_reads_well():
    result = runner.invoke(app, ["build", "--help"])
    assert result.exit_code == 0
    for option in ("--platform", "--push", "--template", "--registry-credentials", "--json", "--base-image"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--platform", "linux/sparc"], "unknown platform 'linux/sparc'"),
        (["--modules-dir", "/nonexistent"], "no such modules folder"),
        (["ghost-module"], "no module named ghost-module"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args, message):
    code, err = run("--modules-dir", str(REPO / "modules"), *args)
    assert code == 2
    assert message in " ".join(err.split())


def test_a_broken_module_json_names_file_and_field(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "module.json").write_text(json.dumps({"image": {"repository": "x", "tag": {"version": "1"}}}))
    code, err = run("--modules-dir", str(tmp_path))
    assert code == 2
    assert "module.json: /image/tag/platforms:" in " ".join(err.split())


def test_credentials_file_readable_by_others_is_refused(tmp_path):
    creds = tmp_path / "creds"
    creds.write_text("user:secret-value\n")
    creds.chmod(0o644)
    code, err = run(
        "--modules-dir",
        str(REPO / "modules"),
        "alert-actuator",
        "--push",
        "127.0.0.1:1",
        "--registry-credentials",
        str(creds),
    )
    assert code == 2
    assert "chmod 600" in err
    assert "secret-value" not in err
