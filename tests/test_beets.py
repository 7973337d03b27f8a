"""The beets plugin through the real ``beet``: import, the ``libtagger`` command, beets' rules.

Every ``beet`` runs as a subprocess on its own library (``BEETSDIR``), with autotagging off,
only this plugin loaded, and a ``sitecustomize`` that refuses and records any internet
connection: beets must never reach MusicBrainz or anything else here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mutagen
import numpy as np
import pytest

import audiogen

pytest.importorskip("beets")

REPO = Path(__file__).resolve().parent.parent

NO_NETWORK = """\
import os, socket

def _refuse(address):
    with open(os.environ["NETWORK_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{address!r}\\n")
    raise OSError("tests/test_beets.py: no network for beets")

_connect = socket.socket.connect

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(address)
    return _connect(self, address)

def getaddrinfo(host, *args, **kwargs):
    _refuse(host)

socket.socket.connect = connect
socket.getaddrinfo = getaddrinfo
"""


def tag(path: Path, title: str, genre: str | None = None) -> Path:
    """Give a file a title (and a genre) as a user's tagger would."""
    audio = mutagen.File(path, easy=True)
    audio["title"] = [title]
    audio["artist"] = ["Test Artist"]
    audio["album"] = ["Test Album"]
    audio.save()
    if genre:
        audiogen.set_genre(path, [genre])
    return path


def file_genres(path: str) -> list[str]:
    """The genre tag of a file, read with mutagen."""
    return list(mutagen.File(path, easy=True).get("genre") or [])


class Beets:
    """One temporary beets installation: its config, library folder and database."""

    FIELDS = ("title", "path", "genres", "libtagger_genre", "libtagger_confidence",
              "libtagger_score", "libtagger_reason")

    def __init__(self, root: Path, plugin: str = "{jobs: 1}") -> None:
        self.root = root
        self.config = root / "beetsdir"
        self.config.mkdir()
        self.directory = root / "library"
        guard = root / "guard"
        guard.mkdir()
        (guard / "sitecustomize.py").write_text(NO_NETWORK)
        self.network_log = root / "network.log"
        self.network_log.touch()
        (self.config / "config.yaml").write_text(
            f"directory: {self.directory}\n"
            f"library: {root / 'library.db'}\n"
            "plugins: libtagger\n"
            "disabled_plugins: [musicbrainz]\n"
            "import: {copy: yes, write: yes, autotag: no, quiet: yes, "
            f"log: {root / 'import.log'}}}\n"
            f"libtagger: {plugin}\n"
        )
        path = [str(guard), str(REPO), os.environ.get("PYTHONPATH", "")]
        self.env = {**os.environ, "BEETSDIR": str(self.config),
                    "NETWORK_LOG": str(self.network_log),
                    "PYTHONPATH": os.pathsep.join(p for p in path if p)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``beet ARGS``; fails the test on a non-zero exit (unless not ``check``)."""
        proc = subprocess.run([sys.executable, "-m", "beets", *args], env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 or not check, f"beet {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        assert "error loading plugin" not in proc.stderr, proc.stderr
        return proc

    def items(self) -> dict[str, dict[str, str]]:
        """title -> the fields of ``FIELDS`` as ``beet ls -f`` prints them."""
        fmt = "\t".join(f"${field}" for field in self.FIELDS)
        lines = self.run("ls", "-f", fmt).stdout.splitlines()
        rows = [dict(zip(self.FIELDS, line.split("\t"), strict=True)) for line in lines]
        return {row["title"]: row for row in rows}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Beets:
    """``beet import`` of an album: two songs (one already tagged Jazz) and a silent track."""
    root = tmp_path_factory.mktemp("beets")
    source = root / "incoming" / "Test Artist - Test Album"
    source.mkdir(parents=True)
    tag(audiogen.write(source / "01 new.mp3", audiogen.music(20.0, seed=3)), "new")
    tag(audiogen.write(source / "02 mine.flac", audiogen.music(20.0, seed=4, tempo=96.0)),
        "mine", genre="Jazz")
    tag(audiogen.write(source / "03 silence.mp3", np.zeros((2, 44100 * 12), np.float32)),
        "silence")
    beets = Beets(root)
    proc = beets.run("import", str(source))
    beets.import_output = proc.stdout + proc.stderr
    beets.source = source
    return beets


def test_import_sets_the_decided_genre_and_keeps_the_users(imported: Beets) -> None:
    items = imported.items()
    assert set(items) == {"new", "mine", "silence"}
    new, mine, silence = items["new"], items["mine"], items["silence"]

    # A decided genre goes into beets' genres field and, through beets' write, the file.
    assert new["libtagger_genre"] and new["genres"] == new["libtagger_genre"]
    assert 0.0 < float(new["libtagger_confidence"]) <= 1.0
    assert 0.0 < float(new["libtagger_score"]) <= 1.0
    assert new["libtagger_reason"].startswith(new["libtagger_genre"].split("; ")[0])
    assert Path(new["path"]).is_relative_to(imported.directory)
    assert file_genres(new["path"]) == new["genres"].split("; ")

    # The user's own genre stays (overwrite: no); libtagger's decision is stored beside it.
    assert mine["genres"] == "Jazz"
    assert mine["libtagger_genre"] and mine["libtagger_genre"] != "Jazz"
    assert file_genres(mine["path"]) == ["Jazz"]

    # Nothing certain: no genre, no libtagger_genre, the reason stored.
    assert silence["genres"] == ""
    assert silence["libtagger_genre"] == "$libtagger_genre"  # beets' mark of an absent field
    assert silence["libtagger_reason"].startswith("silent")
    assert file_genres(silence["path"]) == []

    # Copying: the originals are not touched (the write went to the library's copy).
    assert file_genres(str(imported.source / "01 new.mp3")) == []
    # The album gets no genre its tracks do not share.
    albums = imported.run("ls", "-a", "-f", "$album|$genres").stdout.splitlines()
    assert albums == ["Test Album|"]
    assert imported.network_log.read_text() == ""


def test_flexible_attributes_are_typed_for_queries(imported: Beets) -> None:
    """libtagger_confidence is a float field: beets' numeric range queries work on it."""
    confident = imported.run("ls", "-f", "$title", "libtagger_confidence:0.01..").stdout.split()
    assert sorted(confident) == ["mine", "new"]


def test_command_dry_run_keep_and_force(imported: Beets) -> None:
    before = imported.items()["mine"]
    dry = imported.run("libtagger", "-f", "-n", "title:mine")
    assert "would set genre" in dry.stdout + dry.stderr
    kept = imported.run("libtagger", "title:mine")  # no -f: the item keeps its genre
    assert "keeps its own genre 'Jazz'" in kept.stdout + kept.stderr
    assert imported.items()["mine"] == before
    assert file_genres(before["path"]) == ["Jazz"]

    # -f -W: the database takes libtagger's genre, the file does not (beets' write setting).
    imported.run("libtagger", "-f", "-W", "title:mine")
    mine = imported.items()["mine"]
    assert mine["genres"] == before["libtagger_genre"]
    assert file_genres(mine["path"]) == ["Jazz"]

    # -f with import.write on: the database and, through beets, the file.
    imported.run("modify", "-y", "-W", "title:mine", "genres=Jazz")  # the file still says Jazz
    out = imported.run("libtagger", "-f", "title:mine")
    assert "set genre" in out.stdout + out.stderr
    mine = imported.items()["mine"]
    assert mine["genres"] == before["libtagger_genre"]
    assert file_genres(mine["path"]) == mine["genres"].split("; ")
    assert imported.network_log.read_text() == ""


def test_a_bad_libtagger_config_stops_the_import_before_it_adds_anything(tmp_path: Path) -> None:
    source = tmp_path / "incoming"
    source.mkdir()
    tag(audiogen.write(source / "a.mp3", audiogen.music(3.0, seed=5)), "a")
    beets = Beets(tmp_path, plugin=f"{{config: {tmp_path / 'missing.toml'}}}")
    proc = beets.run("import", str(source), check=False)
    assert proc.returncode == 1
    assert f"libtagger: config file not found: {tmp_path / 'missing.toml'}" in proc.stderr
    assert beets.run("ls").stdout == ""


@pytest.mark.parametrize(("plugin", "message"), [
    ("{jobs: 1, max_genres: 999999999999}", "libtagger: max_genres must be from 1 to 10"),
    ("{jobs: 100000000000000000000}", "libtagger: jobs must be from 0 to 256"),
])
def test_an_out_of_range_plugin_option_stops_the_import(tmp_path: Path, plugin: str,
                                                        message: str) -> None:
    # libtagger's own config bounds these; the plugin's overrides must not slip past them.
    source = tmp_path / "incoming"
    source.mkdir()
    tag(audiogen.write(source / "a.mp3", audiogen.music(3.0, seed=5)), "a")
    beets = Beets(tmp_path, plugin=plugin)
    proc = beets.run("import", str(source), check=False)
    assert proc.returncode == 1 and message in proc.stderr, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert beets.run("ls").stdout == ""
