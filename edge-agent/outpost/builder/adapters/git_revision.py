"""The commit a modules folder comes from, asked of git (the only place the build runs git)."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["head_revision"]


def head_revision(folder: Path) -> str:
    """git's HEAD for ``folder``, or "" when it is not in a repository or git is missing."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""
