"""Outpost's core installs without the ``fleet`` extra (a device, the edge hub's image): the CLI and the
device's services start with the fleet's libraries absent, and ``outpost fleet serve`` says which extra
to install instead of a traceback.

Each case runs a fresh interpreter in which importing any of the extra's libraries fails, as it does
where they are not installed (pyproject.toml's ``fleet`` extra lists them).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[3]


def _extra() -> list[str]:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = [Requirement(r).name.replace("-", "_").lower() for r in doc["project"]["optional-dependencies"]["fleet"]]
    # and what they bring along that the core does not (starlette with fastapi, numpy with scipy)
    return [*names, "starlette", "numpy"]


BLOCK = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
"""


def _run(code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    script = BLOCK.format(blocked=_extra()) + code
    return subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_extra_is_not_in_the_core_dependencies():
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    core = {Requirement(r).name.lower() for r in doc["project"]["dependencies"]}
    assert not core & {"fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "jinja2", "scipy"}


def test_device_services_import_without_the_fleet_extra():
    proc = _run(
        "import outpost.agent.service, outpost.hub.service, outpost.sdk, outpost.bundle, outpost.builder.runner\n"
        "import outpost.agent.adapters.fleet_api, outpost.cli\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] in BLOCKED or m.startswith('outpost.fleet'))\n"
        "print('loaded:', loaded)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loaded: []"


@pytest.mark.parametrize("argv", [["--version"], ["hub", "run", "--help"], ["agent", "run", "--help"]])
def test_device_commands_run_without_the_fleet_extra(argv):
    proc = _run("from outpost.cli import main\nsys.argv = ['outpost', *sys.argv[1:]]\nmain()\n", *argv)
    assert proc.returncode == 0, proc.stderr


def test_fleet_serve_names_the_extra_to_install(tmp_path):
    proc = _run(
        "from outpost.cli import main\nsys.argv = ['outpost', *sys.argv[1:]]\nmain()\n",
        "fleet",
        "serve",
        "--state-dir",
        str(tmp_path),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "pip install 'outpost[fleet]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # it stopped before touching the state dir
