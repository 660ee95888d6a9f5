"""Firmware builds for the tests (a pytest plugin, registered in tests/conftest.py).

Each build runs at most once per session, into ``build/firmware-*`` (git-ignored; CMake rebuilds
only what changed, so later runs reuse it): the host core with its GoogleTest suite and the
emulated node's shared library, and the freestanding rv32imc image. The toolchains come from
``scripts/services/firmware-toolchain.sh`` (idempotent); a failure fails the tests, never skips them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
TOOLCHAIN = ROOT / "scripts" / "services" / "firmware-toolchain.sh"
HOST_BUILD = ROOT / "build" / "firmware-host"
RV32_BUILD = ROOT / "build" / "firmware-rv32"
# The emulated node's package (firmware/host/emulated_node) and the modules it shares code with.
for _path in (FIRMWARE / "host", ROOT / "modules" / "fft-filter", ROOT / "modules" / "anomaly-detector"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def run(cmd: list[str], *, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@dataclass(frozen=True)
class HostBuild:
    directory: Path
    library: Path  # libnode_host.so, the emulated node's C ABI
    tests: Path  # the GoogleTest binary


@dataclass(frozen=True)
class Rv32Build:
    directory: Path
    text: int
    data: int
    bss: int
    output: str


@pytest.fixture(scope="session")
def firmware_toolchain() -> None:
    run(["bash", str(TOOLCHAIN)], timeout=900)


@pytest.fixture(scope="session")
def firmware_host(firmware_toolchain: None) -> HostBuild:
    HOST_BUILD.mkdir(parents=True, exist_ok=True)
    run(["cmake", "-S", str(FIRMWARE / "host"), "-B", str(HOST_BUILD), "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
    jobs = str(min(2, os.cpu_count() or 1))
    run(["cmake", "--build", str(HOST_BUILD), "--parallel", jobs], timeout=900)
    return HostBuild(HOST_BUILD, HOST_BUILD / "libnode_host.so", HOST_BUILD / "core_tests")


@pytest.fixture(scope="session")
def firmware_rv32(firmware_toolchain: None) -> Rv32Build:
    result = run(["bash", str(FIRMWARE / "rv32" / "build.sh"), str(RV32_BUILD)])
    sizes = (RV32_BUILD / "size.txt").read_text().splitlines()[1].split()
    return Rv32Build(RV32_BUILD, int(sizes[0]), int(sizes[1]), int(sizes[2]), result.stdout)
