"""The Python distributions a base image already provides (Debian's ``python3-numpy`` on armhf, ...).

PyPI has no armv7 wheel for numpy, cffi or crc32c; Debian does have them, so the armhf base images
carry them and the module images make their venv with ``--system-site-packages``. pip inside the
image then finds them installed and needs no wheel; the wheel set chosen on the build machine must
agree, so :mod:`outpost.builder.runner` asks each base image once what it provides (:data:`PROBE`,
run in the image, under emulation for a foreign one) and the wheel source resolves as if those were
installed. Called by the runner; pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from packaging.utils import InvalidName, canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = ["PROBE", "format_provided", "parse_provided"]

# Run by the base image's python3: one "name==version" line per distribution outside any venv.
PROBE = (
    "import importlib.metadata as m\n"
    "for d in m.distributions():\n"
    "    n = d.metadata['Name']\n"
    "    if n: print(f'{n}=={d.version}')\n"
)


def parse_provided(output: str) -> dict[str, str]:
    """``{canonical name: version}`` from :data:`PROBE`'s output; lines that are not PEP 440 are skipped."""
    provided: dict[str, str] = {}
    for line in output.splitlines():
        name, sep, version = line.strip().partition("==")
        if not sep:
            continue
        try:
            provided.setdefault(canonicalize_name(name, validate=True), str(Version(version)))
        except (InvalidName, InvalidVersion):
            continue  # e.g. a Debian-local version pip would not accept either
    return dict(sorted(provided.items()))


def format_provided(provided: Mapping[str, str]) -> str:
    """The one-line form kept in the build state (and in wheel keys): ``a==1 b==2``."""
    return " ".join(f"{name}=={version}" for name, version in sorted(provided.items()))
