"""The library's paths as another machine mounts them (``[library.path_map]``)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class PathMap:
    """Prefix pairs (library path, path on this machine); the longest matching prefix wins."""

    pairs: tuple[tuple[str, str], ...] = ()

    def here(self, path: str) -> str:
        """Where this machine finds the library's ``path`` (unchanged when no prefix maps it)."""
        best: tuple[str, str] | None = None
        for library_path, local in self.pairs:
            if path == library_path or path.startswith(library_path.rstrip(os.sep) + os.sep):
                if best is None or len(library_path) > len(best[0]):
                    best = (library_path, local)
        if best is None:
            return path
        return best[1] + path[len(best[0]):]
