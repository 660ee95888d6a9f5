"""armv7 images of the two reference modules whose dependencies PyPI lacks for armv7: anomaly-detector
(numpy, ai-edge-litert) and edge-hub (cffi under cryptography, crc32c).

`outpost build` builds them for linux/arm/v7 under QEMU from the armhf base images, which carry
Debian's python3-numpy, python3-cffi and python3-crc32c: it finds those in the base image and
downloads no wheel for them; the images then run under emulation with Debian's packages, the
anomaly detector's model on tflite-runtime (the last TFLite runtime with an armv7 wheel), and the hub
with Outpost's core only. No registry: test_build.py covers pushing; this covers what armv7 lacks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

REPO = Path(__file__).resolve().parents[2]
OUTPOST = Path(sys.executable).parent / "outpost"
MODULES = ("anomaly-detector", "edge-hub")
ARMV7 = "linux/arm/v7"

# Two emulated builds on 2 shared cores (and, on a fresh machine, the hub's armhf base; .ci/run builds
# it before the tests): their own budget.
pytestmark = pytest.mark.timeout(1800)


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/services" / name), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def built(docker_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _script("qemu.sh")
    _script("base-images.sh", "armhf")
    _script("base-images.sh", "armhf", env={"OUTPOST_BASE_HUB": "1"})
    root = tmp_path_factory.mktemp("build-armv7")
    for name in MODULES:
        dest = root / "modules" / name
        shutil.copytree(REPO / "modules" / name, dest, ignore=shutil.ignore_patterns("wheels", "__pycache__"))
        spec = json.loads((dest / "module.json").read_text())
        spec["image"]["repository"] = f"outpost-test/armv7-{name}"
        (dest / "module.json").write_text(json.dumps(spec, indent=2))
        (dest / "session.txt").write_text(uuid.uuid4().hex)  # a new key each session; BuildKit's cache stays
    command = [str(OUTPOST), "build", "--modules-dir", str(root / "modules"), "--work-dir", str(root / "work")]
    proc = subprocess.run(
        [*command, "--platform", ARMV7, "--json"],
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    doc["state"] = json.loads((root / "work" / "state.json").read_text())
    return doc


def _run(engine: docker.DockerClient, image: str, code: str) -> str:
    out = engine.containers.run(
        image, ["python3", "-c", code], platform=ARMV7, network_mode="none", remove=True, user="nobody"
    )
    return bytes(out).decode().strip()


def test_both_modules_build_for_armv7_and_pass_their_smoke_tests(built):
    images = {(i["module"], i["platform"]): i for i in built["images"]}
    assert set(images) == {(m, ARMV7) for m in MODULES}
    assert all(i["status"] == "built" for i in images.values()), images  # smoke-tested, or it would be "failed"
    assert all(m["ok"] for m in built["modules"])
    provided = " ".join(built["state"]["provided"].values())
    for package in ("numpy==", "cffi==", "crc32c=="):  # what the armhf bases provided
        assert package in provided


def test_anomaly_detector_infers_on_tflite_runtime_with_debians_numpy(built, docker_engine):
    output = _run(
        docker_engine,
        "outpost-test/armv7-anomaly-detector:0.1.0-arm32v7",
        "import platform, numpy, json\n"
        "from anomaly_detector import model, main\n"
        "from anomaly_detector.swap import ModelManager\n"
        "m = ModelManager(cache_dir=None, edgetpu='off').load_file(main.BUNDLED_MODEL)\n"
        "scores = [m.predict(numpy.full(4, v, dtype=numpy.float32)) for v in (0.0, 3.0)]\n"
        "print(json.dumps({'machine': platform.machine(), 'numpy': numpy.__file__, 'runtime': model.RUNTIME,\n"
        "                  'scores': scores}))",
    )
    doc = json.loads(output.splitlines()[-1])
    assert doc["machine"] == "armv7l"
    assert doc["numpy"].startswith("/usr/lib/python3/dist-packages/")  # Debian's python3-numpy
    assert doc["runtime"] == "tflite-runtime"
    assert all(0.0 <= s <= 1.0 for s in doc["scores"])
    assert doc["scores"][0] != doc["scores"][1]


def test_edge_hub_runs_the_core_with_debians_cffi_and_crc32c(built, docker_engine):
    image = "outpost-test/armv7-edge-hub:0.1.0-arm32v7"
    output = _run(
        docker_engine,
        image,
        "import platform, json, importlib.util, cffi, crc32c, kafka.record.util as kafka_crc\n"
        "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\n"
        "import outpost.hub.service, outpost.agent.service, outpost.trust\n"
        "key = Ed25519PrivateKey.generate()\n"
        "key.public_key().verify(key.sign(b'deployment'), b'deployment')\n"
        "fleet = [n for n in ('fastapi', 'sqlalchemy', 'scipy', 'jinja2') if importlib.util.find_spec(n)]\n"
        "print(json.dumps({'machine': platform.machine(), 'cffi': cffi.__file__, 'crc32c': crc32c.__file__,\n"
        "                  'kafka_crc32c_in_c': kafka_crc.crc32c_c is not None, 'fleet': fleet}))",
    )
    doc = json.loads(output.splitlines()[-1])
    assert doc["machine"] == "armv7l"
    assert doc["cffi"].startswith("/usr/lib/python3/dist-packages/")
    assert doc["crc32c"].startswith("/usr/lib/python3/dist-packages/")
    assert doc["kafka_crc32c_in_c"]
    assert doc["fleet"] == []  # the `fleet` extra is not in a device image
    version = docker_engine.containers.run(
        image, ["outpost", "--version"], platform=ARMV7, network_mode="none", remove=True
    )
    assert bytes(version).decode().startswith("outpost ")
