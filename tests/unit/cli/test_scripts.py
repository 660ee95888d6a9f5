"""The scripts a new user runs first: scripts/demo's arguments and the `outpost` launcher (issue 13)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "scripts" / "demo"
SIMULATOR = ROOT / "modules" / "motor-sensor" / "motor_sensor" / "simulator.py"


def demo(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUTPOST_DEMO_DIR": str(tmp_path / "demo")}
    return subprocess.run([str(DEMO), *args], capture_output=True, text=True, env=env, timeout=30, check=False)


def test_demo_help_exits_0_with_usage_on_stdout(tmp_path):
    done = demo("--help", tmp_path=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: scripts/demo")
    assert "--fault" in done.stdout
    assert "--stop" in done.stdout
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "scripts/demo: unknown option '--bogus'"),
        (["--fault", "nonsense"], "scripts/demo: unknown fault 'nonsense' for --fault: choose bearing_wear"),
        (["--fault"], "scripts/demo: --fault needs a value"),
        (["--fault=stall"], "scripts/demo: write --fault stall"),
        (["--stop", "--kafka"], "scripts/demo: --stop takes no other option"),
    ],
)
def test_demo_refuses_bad_arguments_naming_them_and_starts_nothing(tmp_path, args, message):
    done = demo(*args, tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(message)
    assert "usage: scripts/demo" in done.stderr
    assert not (tmp_path / "demo").exists()


def test_demo_faults_are_the_simulators():
    faults = re.search(r'^FAULTS="([^"]*)"', DEMO.read_text(), re.MULTILINE)
    assert faults
    tree = ast.parse(SIMULATOR.read_text())
    declared = next(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "FAULT_TYPES"
    )
    assert declared is not None
    assert faults.group(1).split() == list(ast.literal_eval(declared))


def launcher(tmp_path: Path, bin_dir: str, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUTPOST_BIN_DIR": bin_dir, "PATH": path}
    script = ROOT / "scripts" / "install-launcher"
    return subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=30, check=False)


def test_launcher_puts_outpost_on_path(tmp_path):
    bin_dir = tmp_path / "bin"
    done = launcher(tmp_path, str(bin_dir), "/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert f'export PATH="{bin_dir}:$PATH"' in done.stderr  # not on PATH: says how
    ran = subprocess.run(
        ["outpost", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"},
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("outpost ")
    again = launcher(tmp_path, str(bin_dir), f"{bin_dir}:/usr/bin:/bin")
    assert again.returncode == 0
    assert "outpost is on your PATH" in again.stderr


def test_launcher_leaves_a_foreign_file_alone(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "outpost").write_text("not ours\n")
    done = launcher(tmp_path, str(bin_dir), "/usr/bin:/bin")
    assert done.returncode == 0
    assert "left alone" in done.stderr
    assert (bin_dir / "outpost").read_text() == "not ours\n"


def test_setup_installs_the_launcher():
    assert "scripts/install-launcher" in (ROOT / "scripts" / "setup").read_text()


def test_demo_snapshot_without_a_terminal_waits_for_a_score():
    """Issue 13: the snapshot printed without a terminal lasts longer than the detector's report
    interval (so it shows a score, not "anomaly score: -"), and is retried while there is none."""
    text = DEMO.read_text()
    seconds = [float(s) for s in re.findall(r"--once --seconds (\d+(?:\.\d+)?)", text)]
    assert seconds
    detector = (ROOT / "modules" / "anomaly-detector" / "anomaly_detector" / "main.py").read_text()
    every = re.search(r"^REPORT_EVERY_SECS = ([\d.]+)", detector, re.MULTILINE)
    assert every
    assert min(seconds) > float(every.group(1))
    assert '*"no score seen yet"*' in text


def test_demo_wait_for_modules_tolerates_no_state_yet():
    """The demo's readiness probe reads `outpost list --json`, which prints nothing before the agent
    has written its state: that is "not ready yet", never a traceback on the user's screen."""
    probe = re.search(r"--json 2>/dev/null \| python3 -c '(.*?)'\n", DEMO.read_text(), re.DOTALL)
    assert probe
    for stdin, code in (("", 1), ("{", 1), ('{"modules": {}}', 1)):
        done = subprocess.run(
            [sys.executable, "-c", probe.group(1)], input=stdin, capture_output=True, text=True, check=False
        )
        assert done.returncode == code
        assert "Traceback" not in done.stderr
    ready = {"systemModules": {"edgeHub": {"runtimeStatus": "running"}}}
    ready["modules"] = {f"m{i}": {"runtimeStatus": "running"} for i in range(4)}
    done = subprocess.run(
        [sys.executable, "-c", probe.group(1)], input=json.dumps(ready), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
