"""What a base image provides (Debian's python3-numpy on armhf ...) satisfies requirements without wheels.

The wheel selection runs real pip, offline, against a local wheelhouse: a module wheel that requires
numpy and cffi resolves when the base provides them, no wheel of theirs is copied, and without them
it fails naming the missing one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from outpost.builder.adapters.pip_wheels import PipWheels, _stand_ins
from outpost.builder.platforms import platform_named
from outpost.builder.ports import BuildError
from outpost.builder.provided import PROBE, format_provided, parse_provided
from outpost.builder.state import BuildState


def test_parse_canonicalises_and_skips_what_pip_would_not_accept():
    output = "numpy==1.24.2\nPyYAML==6.0\nweird==1.0+debian~1\nno version line\ncffi==1.15.1\nnumpy==9.9\n"
    provided = parse_provided(output)
    assert provided == {"cffi": "1.15.1", "numpy": "1.24.2", "pyyaml": "6.0"}
    assert format_provided(provided) == "cffi==1.15.1 numpy==1.24.2 pyyaml==6.0"
    assert parse_provided(format_provided(provided).replace(" ", "\n")) == provided
    assert "importlib.metadata" in PROBE


def test_state_keeps_what_each_base_provides(tmp_path):
    state = BuildState.load(tmp_path / "state.json")
    state.provided["sha256:abc"] = "numpy==1.24.2"
    state.save()
    assert BuildState.load(tmp_path / "state.json").provided == {"sha256:abc": "numpy==1.24.2"}


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{name}/__init__.py", "")
        whl.writestr(f"{info}/METADATA", meta)
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")


def test_stand_ins_are_wheels_with_the_provided_metadata(tmp_path):
    names = _stand_ins({"numpy": "1.24.2", "typing-extensions": "4.4.0"}, tmp_path)
    assert names == {"numpy-1.24.2-py3-none-any.whl", "typing_extensions-4.4.0-py3-none-any.whl"}
    with zipfile.ZipFile(tmp_path / "numpy-1.24.2-py3-none-any.whl") as whl:
        assert "Version: 1.24.2" in whl.read("numpy-1.24.2.dist-info/METADATA").decode()
        assert not [n for n in whl.namelist() if not n.startswith("numpy-1.24.2.dist-info/")]


def test_select_resolves_against_what_the_base_provides_and_copies_no_wheel_of_it(tmp_path):
    house, dest = tmp_path / "house", tmp_path / "dest"
    house.mkdir()
    dest.mkdir()
    _wheel(house, "detector", "1.0", ["numpy>=1.23.2", "cffi>=1.14"])
    armv7 = platform_named("arm32v7")
    PipWheels().select(armv7, ("detector==1.0",), "3.11", house, dest, provided={"numpy": "1.24.2", "cffi": "1.15.1"})
    assert sorted(p.name for p in dest.iterdir()) == ["detector-1.0-py3-none-any.whl"]

    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(BuildError, match="cffi"):
        PipWheels().select(armv7, ("detector==1.0",), "3.11", house, other, provided={"numpy": "1.24.2"})
    _wheel(house, "needs_new", "1.0", ["numpy>=2"])
    with pytest.raises(BuildError, match="numpy"):  # the base's numpy is too old for this requirement
        PipWheels().select(armv7, ("needs_new==1.0",), "3.11", house, other, provided={"numpy": "1.24.2"})


def test_precompiled_wheel_is_imported_from_its_bytecode(tmp_path):
    import base64
    import hashlib
    import subprocess
    import sys

    from outpost.builder.adapters.pip_wheels import precompile_wheel

    wheel = tmp_path / "tool-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr("tool/__init__.py", "ANSWER = 1\n")
        whl.writestr("tool-1.0.dist-info/RECORD", "tool/__init__.py,,\ntool-1.0.dist-info/RECORD,,\n")
    assert precompile_wheel(wheel)
    assert not precompile_wheel(wheel)  # once
    with zipfile.ZipFile(wheel) as whl:
        pyc = whl.read("tool/__init__.pyc")
        record = whl.read("tool-1.0.dist-info/RECORD").decode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(pyc).digest()).rstrip(b"=").decode()
    assert f"tool/__init__.pyc,sha256={digest},{len(pyc)}" in record

    # The same wheel with other sources but the old bytecode: zipimport runs the bytecode.
    changed = tmp_path / "changed.whl"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(changed, "w") as out:
        for info in src.infolist():
            data = b"ANSWER = 2\n" if info.filename == "tool/__init__.py" else src.read(info)
            out.writestr(info, data)
    code = f"import sys; sys.path.insert(0, {str(changed)!r}); import tool; print(tool.ANSWER)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "1"
