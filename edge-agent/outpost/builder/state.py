"""What earlier builds produced, kept in one JSON file so a rebuild can skip what has not changed.

Per image (module/platform): the input key it was built from and the digest each remote tag was
pushed as; per module list: its digest. Losing the file costs one rebuild check, never a wrong
image: the local image's key label and the registry are checked too. Called by the runner.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BuildState"]


@dataclass
class BuildState:
    path: Path
    pushed: dict[str, str] = field(default_factory=dict)  # remote ref (repo:tag) -> digest
    provided: dict[str, str] = field(default_factory=dict)  # base image id -> its Python packages ("a==1 b==2")

    @classmethod
    def load(cls, path: Path) -> BuildState:
        try:
            doc: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)  # no or unreadable state: everything is checked afresh
        if not isinstance(doc, dict):
            return cls(path)
        pushed, provided = doc.get("pushed", {}), doc.get("provided", {})
        return cls(
            path,
            {str(k): str(v) for k, v in pushed.items()} if isinstance(pushed, dict) else {},
            {str(k): str(v) for k, v in provided.items()} if isinstance(provided, dict) else {},
        )

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            doc = {"version": 1, "pushed": dict(sorted(self.pushed.items()))}
            doc["provided"] = dict(sorted(self.provided.items()))
            json.dump(doc, f, indent=2)
        os.replace(tmp, self.path)
