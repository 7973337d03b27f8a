"""A personal head on the real development set, next to the default genres on the same tracks.

Run from the repository root (about a minute):

    python bench/personal.py
    python bench/personal.py --music ../shared/music --min-tracks 2

The development set (``../shared/music``, ``<genre>/<file>``) is copied into a temporary
library (never into the project), each copy tagged with its folder's genre as a user would,
scanned without writing, and ``libtagger learn`` trains and cross-validates a head on the
genres that have at least ``--min-tracks`` songs. With so few songs this shows the workflow and
honest error bars, not the accuracy of a head trained on a real tagged library.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mutagen

DEFAULT_MUSIC = Path(__file__).resolve().parents[2] / "shared" / "music"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line."""
    return subprocess.run([sys.executable, "-m", "libtagger", *args], capture_output=True,
                          text=True, check=True, timeout=1800)


def main() -> None:
    """Copy, tag, scan, learn; print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--music", type=Path, default=DEFAULT_MUSIC)
    parser.add_argument("--min-tracks", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lt-personal-") as temp:
        base = Path(temp)
        root = base / "Music"
        for source in sorted(args.music.glob("*/*")):
            if source.suffix.lower() not in {".mp3", ".ogg", ".flac", ".m4a", ".wav"}:
                continue
            copy = root / source.parent.name / source.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, copy)
            audio = mutagen.File(copy, easy=True)
            audio["genre"] = [source.parent.name]
            audio.save()
        config = base / "config.toml"
        # The copies above are complete: no need to wait out the settle time.
        config.write_text(f"[library]\nsettle_seconds = 0\n[personal]\n"
                          f"min_tracks = {args.min_tracks}\nfolds = 2\n")
        db = base / "lib.db"
        started = time.perf_counter()
        run("--config", str(config), "--db", str(db), "scan", "--no-write", str(root))
        scanned = time.perf_counter() - started
        learned = run("--config", str(config), "--db", str(db), "learn", "--out", str(base))
        report = json.loads((base / "learn.json").read_text())
    print(f"development set: {args.music}; scan {scanned:.0f} s\n")
    print(learned.stdout.rstrip())
    print("\nper track (cross-validated): label -> personal head's best / default genres' best")
    default = {f["path"]: f for f in report["default"]["files"]}
    for f in report["personal"]["files"]:
        other = default[f["path"]]
        print(f"  {f['label']:<8} -> {(f['predicted'] or ['-'])[0]:<8} / "
              f"{(other['predicted'] or ['-'])[0]:<12} {Path(f['path']).name[:50]}")


if __name__ == "__main__":
    main()
