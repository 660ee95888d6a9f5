"""WheelSource on pip: a per-platform wheelhouse filled from the package index once, then each
module's wheels copied out of it offline; and the Outpost SDK wheel built from a source checkout.

``pip download --platform`` fetches binary wheels for the image's platform and Python without
running anything foreign, so the image build itself needs no network. Used by ``outpost build``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from outpost.builder.inputs import digest_strings, tree_digest
from outpost.builder.platforms import Platform
from outpost.builder.ports import BuildError

__all__ = ["PipWheels", "sdk_wheel"]

_TAIL = 20


def _pip(args: list[str], *, what: str, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(
        command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, env=env or None
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_TAIL:])
        raise BuildError(f"{what} failed:\n{tail}")


def _target(platform: Platform, python_version: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for tag in platform.wheel_tags():
        args += ["--platform", tag]
    return args


def _stand_ins(provided: Mapping[str, str], folder: Path) -> set[str]:
    """An empty wheel per provided distribution (metadata only), so pip's resolver on this machine
    counts it as available at the base image's version; returns their file names.

    They only steer the resolution: they are removed from what pip downloaded, and pip in the image
    finds the base image's own installation instead (its venv has ``--system-site-packages``).
    """
    names: set[str] = set()
    for name, version in provided.items():
        stem = f"{name.replace('-', '_')}-{version}"
        filename = f"{stem}-py3-none-any.whl"
        info = f"{stem}.dist-info"
        files = {
            f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: outpost-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        }
        with zipfile.ZipFile(folder / filename, "w") as whl:
            for path, text in files.items():
                whl.writestr(path, text)
            whl.writestr(f"{info}/RECORD", "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"]))
        names.add(filename)
    return names


def _download(args: list[str], dest: Path, provided: Mapping[str, str], *, what: str) -> None:
    with tempfile.TemporaryDirectory(prefix="outpost-provided-") as tmp:
        stand_ins = _stand_ins(provided, Path(tmp))
        links = ["--find-links", tmp] if stand_ins else []
        try:
            _pip(["download", "--quiet", "--dest", str(dest), *links, *args], what=what)
        finally:
            for name in stand_ins:
                (dest / name).unlink(missing_ok=True)


def precompile_wheel(wheel: Path) -> bool:
    """Add a bytecode file next to every module of ``wheel``, for the running Python; True if it did.

    The module images run pip straight from its wheel (a venv made ``--without-pip``); zipimport can
    write no bytecode into a wheel, so each build compiled all of pip's sources again: about 30 s per
    image under QEMU. Bytecode does not depend on the machine, only on the Python version, so it is
    compiled here once per wheelhouse: unchecked hash-based .pyc files (PEP 552) in the legacy layout
    zipimport reads, listed in RECORD. A Python of another version sees their magic number differ
    and compiles the sources as before.
    """
    header = importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little")  # hash-based, not checked
    with zipfile.ZipFile(wheel) as src:
        names = src.namelist()
        records = [n for n in names if n.endswith(".dist-info/RECORD")]
        if len(records) != 1 or any(n.endswith(".pyc") for n in names):
            return False
        tmp = wheel.with_name(f".{wheel.name}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            lines = src.read(records[0]).decode().splitlines()
            for info in src.infolist():
                if info.filename == records[0]:
                    continue
                data = src.read(info)
                out.writestr(info, data)
                if not info.filename.endswith(".py"):
                    continue
                try:
                    code = compile(data, info.filename, "exec", dont_inherit=True)
                except (SyntaxError, ValueError):
                    continue  # left to the image's Python, as before
                pyc = header + importlib.util.source_hash(data) + marshal.dumps(code)
                entry = zipfile.ZipInfo(info.filename + "c", date_time=info.date_time)
                entry.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(entry, pyc)
                digest = base64.urlsafe_b64encode(hashlib.sha256(pyc).digest()).rstrip(b"=").decode()
                lines.append(f"{entry.filename},sha256={digest},{len(pyc)}")
            record = zipfile.ZipInfo(records[0], date_time=src.getinfo(records[0]).date_time)
            record.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(record, "\n".join(lines) + "\n")
    os.replace(tmp, wheel)
    return True


class PipWheels:
    def fill(
        self,
        platform: Platform,
        requirements: tuple[str, ...],
        python_version: str,
        wheelhouse: Path,
        *,
        provided: Mapping[str, str],
    ) -> None:
        if not requirements:
            return
        _download(
            [*_target(platform, python_version), *requirements],
            wheelhouse,
            provided,
            what=f"downloading wheels for {platform.docker} ({' '.join(requirements)}); "
            f"a package without a {platform.machine} wheel needs a Debian package in the base image or "
            "an unsupportedPlatforms entry in module.json",
        )
        if python_version == f"{sys.version_info[0]}.{sys.version_info[1]}":
            for pip_wheel in wheelhouse.glob("pip-*.whl"):
                precompile_wheel(pip_wheel)

    def select(
        self,
        platform: Platform,
        requirements: tuple[str, ...],
        python_version: str,
        wheelhouse: Path,
        dest: Path,
        *,
        provided: Mapping[str, str],
    ) -> None:
        _download(
            ["--no-index", "--find-links", str(wheelhouse), *_target(platform, python_version), *requirements],
            dest,
            provided,
            what=f"copying wheels for {platform.docker} from {wheelhouse}",
        )


def sdk_wheel(source: Path, cache: Path) -> Path:
    """The Outpost wheel built from the checkout at ``source``, once per source content.

    Built with a fixed SOURCE_DATE_EPOCH, so the same sources give the same bytes (and images keep
    their cache); from a copy of the sources so the checkout gets no build/ or egg-info.
    """
    key = digest_strings([tree_digest(source / "edge-agent"), tree_digest_of(source / "pyproject.toml")])[:16]
    folder = cache / f"outpost-sdk-{key}"
    wheels = sorted(folder.glob("outpost-*.whl")) if folder.is_dir() else []
    if wheels:
        return wheels[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        copy = Path(tmp, "src")
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            if (source / name).exists():
                shutil.copy2(source / name, copy / name)
        shutil.copytree(
            source / "edge-agent", copy / "edge-agent", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        out = Path(tmp, "out")
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
        _pip(
            ["wheel", "--quiet", "--no-deps", "-w", str(out), str(copy)], what="building the Outpost SDK wheel", env=env
        )
        built = sorted(out.glob("outpost-*.whl"))
        if not built:
            raise BuildError("building the Outpost SDK wheel produced no wheel")
        for old in cache.glob("outpost-sdk-*"):
            shutil.rmtree(old, ignore_errors=True)
        folder.mkdir()
        shutil.move(str(built[0]), folder / built[0].name)
    return next(folder.glob("outpost-*.whl"))


def tree_digest_of(path: Path) -> str:
    return digest_strings([path.read_text(encoding="utf-8")]) if path.exists() else ""
