"""The firmware core: its GoogleTest suite under ctest, the rv32imc image, and the shared vectors."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from integration.firmware_harness import FIRMWARE, RV32_BUILD, HostBuild, Rv32Build

#: ESP32-C3: an OTA app slot of 1.5 MiB (partitions.csv) and 400 KiB of SRAM, of which the core may
#: take 320 KiB (Wi-Fi, stacks and the TFLM arena need the rest).
APP_SLOT = 0x180000
RAM_BUDGET = 320 * 1024


def test_core_unit_tests_pass_under_ctest(firmware_host: HostBuild) -> None:
    result = subprocess.run(
        ["ctest", "--output-on-failure", "--timeout", "120"],
        cwd=firmware_host.directory, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = re.search(r"100% tests passed, 0 tests failed out of (\d+)", result.stdout)
    assert summary, result.stdout[-2000:]
    assert int(summary.group(1)) >= 50  # the suite is discovered, not silently empty


def test_rv32_image_fits_the_esp32_c3_and_links_no_allocator(firmware_rv32: Rv32Build) -> None:
    assert "OK: no allocator linked" in firmware_rv32.output
    assert 20_000 < firmware_rv32.text + firmware_rv32.data < APP_SLOT
    assert firmware_rv32.data + firmware_rv32.bss < RAM_BUDGET
    elf = RV32_BUILD / "node.elf"
    header = subprocess.run(["riscv64-unknown-elf-readelf", "-h", str(elf)], capture_output=True, text=True, check=True)
    assert "RISC-V" in header.stdout
    assert "ELF32" in header.stdout
    attrs = subprocess.run(["riscv64-unknown-elf-readelf", "-A", str(elf)], capture_output=True, text=True, check=True)
    assert "rv32i2p1_m2p0_c2p0" in attrs.stdout or "rv32i2p0_m2p0_c2p0" in attrs.stdout, attrs.stdout
    print(f"rv32imc core: text {firmware_rv32.text} B, data {firmware_rv32.data} B, bss {firmware_rv32.bss} B")


def test_the_rv32_image_runs_under_qemu_and_computes_what_the_gateway_computes(firmware_rv32: Rv32Build) -> None:
    """rv32/main.cpp feeds the core channel c a sine of amplitude c + 1 at 50 (c + 1) Hz and prints
    the vibration channel's features; fft-filter must agree on the same window."""
    line = (RV32_BUILD / "qemu.txt").read_text()
    found = re.search(
        r"rv32 node: 1 windows, message of (\d+) bytes, vibration rms ([\d.e+-]+), peak ([\d.e+-]+) Hz "
        r"([\d.e+-]+), band 80-200 ([\d.e+-]+)",
        line,
    )
    assert found, line
    size, rms, peak_hz, peak_amp, band = (float(g) for g in found.groups())
    assert 1000 < size < 2560
    sys.path.insert(0, str(FIRMWARE.parent / "modules" / "fft-filter"))
    from fft_filter.features import FilterSettings, channel_features

    i = np.arange(1024, dtype=np.float32)
    vibration = np.float32(3) * np.sin(np.float32(2 * math.pi * 150) * i / np.float32(8000))
    want = channel_features(vibration.astype(np.float64), 8000.0, FilterSettings())
    assert rms == pytest.approx(want["rms"], rel=2e-3)
    assert peak_hz == pytest.approx(want["peaks"][0][0], abs=0.05)
    assert peak_amp == pytest.approx(want["peaks"][0][1], rel=2e-3)
    assert band == pytest.approx(want["bands"]["80-200"], rel=2e-3)


def test_the_allocator_check_catches_malloc(firmware_rv32: Rv32Build, tmp_path: Path) -> None:
    """The check is real: the same image with one malloc call fails the build."""
    main = (FIRMWARE / "rv32" / "main.cpp").read_text()
    bad = tmp_path / "rv32"
    bad.mkdir()
    for name in ("build.sh", "no_malloc.h"):
        (bad / name).write_text((FIRMWARE / "rv32" / name).read_text())
    (bad / "main.cpp").write_text(
        main.replace("int main() {", "#include <stdlib.h>\nvoid* volatile g_p;\nint main() {\n    g_p = malloc(9);")
    )
    (tmp_path / "components").symlink_to(FIRMWARE / "components")
    result = subprocess.run(
        ["bash", str(bad / "build.sh"), str(tmp_path / "out")], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode != 0
    assert "links an allocator" in result.stderr
    assert re.search(r"\bmalloc\b", result.stderr)


def test_shared_vectors_are_what_fft_filter_computes_today() -> None:
    """firmware/test-vectors/features.json must be regenerated when fft-filter's features change."""
    path = FIRMWARE / "test-vectors" / "generate.py"
    spec = importlib.util.spec_from_file_location("firmware_vectors", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["firmware_vectors"] = module
    spec.loader.exec_module(module)
    committed = json.loads((FIRMWARE / "test-vectors" / "features.json").read_text())
    fresh = module.case(committed["cases"][0]["name"], module.synthetic())
    regenerate = "run: .venv/bin/python firmware/test-vectors/generate.py"
    assert fresh == json.loads(json.dumps(committed["cases"][0])), regenerate
    assert committed["tolerance"] == module.TOLERANCE


def test_the_board_build_compiles_the_same_core_and_fits_its_partitions() -> None:
    """ESP-IDF cannot run here: what can be checked statically is checked. The board's CMake lists
    every core source the host and rv32 builds compile, the model partitions hold the core's largest
    model, the app slots the rv32 budget above, and every ESP component used is declared."""
    core_sources = sorted(p.name for p in (FIRMWARE / "components" / "node_core" / "src").glob("*.cpp"))
    board_cmake = (FIRMWARE / "main" / "CMakeLists.txt").read_text()
    listed = sorted(set(re.findall(r"\$\{CORE\}/src/(\w+\.cpp)", board_cmake)))
    assert listed == core_sources
    config = (FIRMWARE / "components" / "node_core" / "include" / "node" / "config.hpp").read_text()
    max_model = re.search(r"kMaxModelBytes = (\d+) \* 1024", config)
    assert max_model
    partitions = {
        row[0].strip(): [c.strip() for c in row]
        for row in (line.split(",") for line in (FIRMWARE / "partitions.csv").read_text().splitlines())
        if row[0].strip() and not row[0].startswith("#")
    }
    for slot in ("model_a", "model_b"):
        assert int(partitions[slot][4], 16) >= int(max_model.group(1)) * 1024
    for app in ("ota_0", "ota_1"):
        assert int(partitions[app][4], 16) == APP_SLOT
    manifest = (FIRMWARE / "main" / "idf_component.yml").read_text()
    for component in ("espressif/esp-tflite-micro", "espressif/esp-dsp", "espressif/jsmn"):
        assert component in manifest
