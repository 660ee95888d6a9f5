"""The CLI's error boundary: one line and what to do, exit codes as ``outpost --help`` documents them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outpost.cli import app, routes
from outpost.cli.boundary import DEBUG_ENV

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]
ROUTE = "FROM /messages/* INTO $upstream"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


@pytest.mark.parametrize(("option", "value"), [("--property", "severity"), ("--system", "contentType")])
def test_assignment_without_value_is_a_usage_error_naming_the_option(option, value):
    code, out, err = run("route", "check", ROUTE, option, value)
    assert code == 2
    assert f"Invalid value for '{option}': expects KEY=VALUE, got '{value}'" in err
    assert "Traceback" not in out + err


def test_help_documents_exit_codes_and_debug():
    code, out, _ = run("--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "Exit codes: 0 done, 1 failed" in flat
    assert "2 usage error" in flat
    assert "--debug" in flat
    assert "OUTPOST_DEBUG=1" in flat


@pytest.fixture
def broken_parser(monkeypatch):
    def explode(text: str) -> object:
        raise RuntimeError("the parser fell over\nsecond line")

    monkeypatch.setattr(routes, "parse_route", explode)


@pytest.mark.usefixtures("broken_parser")
def test_unexpected_exception_is_one_line_and_exit_1():
    code, out, err = run("route", "check", ROUTE)
    assert code == 1
    assert "Traceback" not in out + err
    assert err.splitlines()[0] == "error: unexpected RuntimeError: the parser fell over"
    assert "--debug" in err.splitlines()[1]
    assert len(err.splitlines()) == 2


@pytest.mark.usefixtures("broken_parser")
@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how):
    args = ["--debug", "route", "check", ROUTE] if how == "flag" else ["route", "check", ROUTE]
    code, _, err = run(*args, env={DEBUG_ENV: "1"} if how == "env" else None)
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: the parser fell over" in err


def test_keyboard_interrupt_exits_130(monkeypatch):
    def interrupted(text: str) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(routes, "parse_route", interrupted)
    code, out, err = run("route", "check", ROUTE)
    assert code == 130
    assert "Traceback" not in out + err


def test_missing_file_names_it(monkeypatch, tmp_path):
    def gone(text: str) -> object:
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "gone.json"))

    monkeypatch.setattr(routes, "parse_route", gone)
    code, _, err = run("route", "check", ROUTE)
    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'gone.json'}: No such file or directory")


def test_usage_errors_exit_2():
    code, _, err = run("list", "--bogus")
    assert code == 2
    assert "No such option: --bogus" in err


def test_console_script_has_the_boundary():
    """The installed ``outpost`` (main()), not only the test runner, goes through the boundary."""
    exe = shutil.which("outpost", path=str(Path(sys.executable).parent))
    assert exe
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    done = subprocess.run(
        [exe, "route", "check", ROUTE, "--property", "severity"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert "--property" in done.stderr


def test_too_deep_input_is_named_not_called_a_bug(monkeypatch):
    def deep(text: str) -> object:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    monkeypatch.setattr(routes, "parse_route", deep)
    code, out, err = run("route", "check", ROUTE)
    assert code == 1
    assert err.startswith("error: an input is nested too deeply to read")
    assert "unexpected" not in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--state-dir", ""],
        ["manifest", "validate", "manifests/motor-monitor.json", " "],
        ["manifest", "show", "manifests/motor-monitor.json", "--layer", ""],
    ],
)
def test_an_empty_path_is_a_usage_error_everywhere(args, monkeypatch):
    """typer reads '' as Path('.'): the root refuses it for every path parameter of the tree."""
    monkeypatch.chdir(ROOT)
    code, out, err = run(*args)
    assert code == 2
    assert "an empty path names nothing" in err
    assert "Traceback" not in out + err
