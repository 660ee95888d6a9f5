"""ci/github's workflow: actionlint finds nothing, and every `outpost` command it runs exists with the
options it passes (so the pipeline never does something the local commands cannot)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from outpost.cli import app

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "ci" / "github").glob("*.yml"))


def _actionlint() -> str:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/services/actionlint.sh")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"actionlint.sh failed:\n{proc.stdout}{proc.stderr}"
    return "/usr/local/bin/actionlint"


def _run_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in WORKFLOWS:
        doc = yaml.safe_load(path.read_text())
        for job_name, job in doc["jobs"].items():
            for step in job.get("steps", []):
                if "run" in step:
                    blocks.append((f"{path.name}:{job_name}:{step.get('name', '?')}", step["run"]))
    return blocks


def _outpost_commands() -> list[tuple[str, list[str]]]:
    """Every `outpost ...` invocation, with ${{ }} expressions and $VARS replaced by a word."""
    found = []
    for where, script in _run_blocks():
        text = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", script).replace("\\\n", " ")
        for line in text.splitlines():  # `run: >-` folds to one line; `run: |` keeps lines
            words = shlex.split(line, comments=True)
            if words and words[0] == "outpost":
                end = words.index(">") if ">" in words else len(words)
                found.append((where, words[1:end]))
    return found


def test_there_is_a_workflow_and_it_calls_outpost():
    assert WORKFLOWS
    commands = {tuple(words[:1]) for _, words in _outpost_commands()}
    assert ("build",) in commands
    assert ("deploy",) in commands


def test_actionlint_finds_nothing():
    actionlint = _actionlint()
    proc = subprocess.run([actionlint, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _resolve(words: list[str]) -> tuple[Any, list[str], list[str]]:
    """The (typer-vendored) click command the words name, the path to it and the remaining words."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(words)
    while getattr(command, "commands", None) is not None and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        if sub is None:
            return None, [*path, rest[0]], rest[1:]
        path.append(rest.pop(0))
        command = sub
    return command, path, rest


def _check(where: str, words: list[str]) -> None:
    command, path, rest = _resolve(words)
    assert command is not None, f"{where}: `outpost {' '.join(path)}` does not exist"
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    for word in rest:
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            assert name in options, f"{where}: `outpost {' '.join(path)}` has no option {name}"


@pytest.mark.parametrize("invocation", _outpost_commands(), ids=lambda c: " ".join(c[1][:2]))
def test_every_outpost_command_exists_with_its_options(invocation):
    where, words = invocation
    _check(where, words)


def test_the_check_itself_catches_a_missing_option():
    with pytest.raises(AssertionError, match="no option --no-such-option"):
        _check("t", ["build", "--no-such-option"])
    with pytest.raises(AssertionError, match="does not exist"):
        _check("t", ["no-such-command"])


def _pipeline_scripts() -> list[tuple[str, list[str]]]:
    """Every `python ci/...py ...` invocation (the model pipeline's scripts), expressions replaced by a word."""
    found = []
    for where, script in _run_blocks():
        text = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", script).replace("\\\n", " ")
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) > 1 and Path(words[0]).name.startswith("python") and words[1].startswith("ci/"):
                found.append((where, words[1:]))
    return found


def test_the_workflow_runs_the_model_pipeline():
    assert {words[0] for _, words in _pipeline_scripts()} >= {"ci/model/train.py", "ci/model/candidate.py"}


@pytest.mark.parametrize("invocation", _pipeline_scripts(), ids=lambda c: c[1][0])
def test_every_pipeline_script_exists_with_its_options(invocation):
    where, (script, *args) = invocation
    assert (REPO / script).is_file(), f"{where}: {script} does not exist"
    shown = subprocess.run(
        [sys.executable, str(REPO / script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert shown.returncode == 0, f"{where}: {script} --help failed: {shown.stderr}"
    for word in args:
        if word.startswith("--"):
            assert re.search(rf"(^|\s){re.escape(word)}\b", shown.stdout), f"{where}: {script} has no option {word}"
