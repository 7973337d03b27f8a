"""Configuration: TOML in, typed frozen objects out. Every default lives in this module.

The file is read once (``load_config``) and the resulting :class:`Config` is passed to whoever
needs it; nothing here holds global state. ``config.example.toml`` at the repository root
shows every key with its default (a test checks the two agree).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from libtagger.errors import ConfigError

APP_NAME = "libtagger"
CONFIG_ENV = "LIBTAGGER_CONFIG"
MAX_JOBS = 256
"""Most worker processes a run may start (each loads the models, about 800 MB)."""

@dataclass(frozen=True)
class GenreNode:
    """One node of the genre tree: a broad genre (no parent) or a style under one."""

    name: str
    tags: tuple[str, ...]
    """The model tags that count as this node, in any model's vocabulary (case and
    punctuation ignored). A broad genre also counts every style under it."""
    parent: str | None = None


def _tree(spec: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]]) -> tuple[GenreNode, ...]:
    nodes: list[GenreNode] = []
    for name, (tags, styles) in spec.items():
        nodes.append(GenreNode(name, tags))
        nodes += [GenreNode(style, style_tags, name) for style, style_tags in styles.items()]
    return tuple(nodes)


# The genre tree: broad genre -> (its own tags, {style: tags}). musicnn's tags (MSD, MTT) are
# lower case; AudioSet's (EfficientAT) are its ontology's names. A genre only one network can
# name (Reggae, Latin, Disco, World) is held to the stricter style gate.
DEFAULT_GENRES: tuple[GenreNode, ...] = _tree({
    "Rock": (("rock", "classic rock", "hard rock", "alternative rock", "indie rock",
              "Rock music"),
             {"Progressive Rock": ("progressive rock",), "Punk": ("punk", "Punk rock"),
              "Grunge": ("Grunge",), "Psychedelic Rock": ("Psychedelic rock",),
              "Rock and Roll": ("Rock and roll",)}),
    "Metal": (("metal", "heavy metal"), {}),
    "Pop": (("pop", "indie pop", "Pop music"), {}),
    "Electronic": (("electronic", "electronica", "electro", "Electronic music",
                    "Electronic dance music"),
                   {"House": ("house", "House music"), "Techno": ("techno",),
                    "Trance": ("Trance music",), "Drum & Bass": ("Drum and bass",),
                    "Dubstep": ("Dubstep",), "Ambient": ("ambient", "chillout", "Ambient music")}),
    "Hip-Hop": (("hip-hop", "Hip hop music"), {}),
    "R&B": (("rnb", "Rhythm and blues"), {"Soul": ("soul", "Soul music")}),
    "Funk": (("funk",), {}),
    "Disco": (("Disco",), {}),
    "Jazz": (("jazz",), {"Swing": ("Swing music",)}),
    "Blues": (("blues",), {}),
    "Country": (("country",), {"Bluegrass": ("Bluegrass",)}),
    "Folk": (("folk", "Folk music"), {}),
    "Reggae": (("Reggae",), {"Ska": ("Ska",)}),
    "Latin": (("Music of Latin America",), {"Salsa": ("Salsa music",), "Flamenco": ("Flamenco",)}),
    "Classical": (("classical", "classic", "Classical music"), {"Opera": ("opera",)}),
    "World": (("Middle Eastern music", "Music of Africa", "Music of Asia", "Traditional music",
               "indian", "sitar"),
              {"Afrobeat": ("Afrobeat",), "Carnatic": ("Carnatic music",),
               "Bollywood": ("Music of Bollywood",)}),
    "New Age": (("new age", "New-age music"), {}),
    "Gospel": (("Gospel music", "Christian music"), {}),
})


@dataclass(frozen=True)
class ClassifierConfig:
    """How tracks are cut into windows and voted into genres."""

    models: tuple[str, ...] = ("msd_vgg", "mtt_vgg", "mn04_as")
    """Shipped model names or paths to ``.tflite`` files (with a sidecar). Models with the same
    front-end form one network (their scores are averaged); networks vote independently."""
    windows: int = 4
    """Stretches of audio decoded per track, spread over it: 10 s each when EfficientAT is
    configured (musicnn classifies three 3-s windows of each), else 3 s."""
    edge_skip: float = 0.1
    """Fraction of the track skipped at each end when spreading windows (intros, fade-outs)."""
    timeline_min_duration: float = 600.0
    """Audio at least this long (seconds; mixes) is classified window by window, in full."""
    top_k: int = 3
    """Genres reported per track."""
    min_score: float = 0.05
    """Genres scoring below this are not reported at all."""
    threads: int = 1
    """TFLite threads per worker process."""
    batch_size: int = 1
    """Windows per model call. On CPU a bigger batch is no faster, and each extra window costs
    about 80 MB of TFLite working memory per model."""


@dataclass(frozen=True)
class LibraryConfig:
    """Where the music and the database are."""

    database: str = ""
    """Path or SQLAlchemy URL of the genre database ("": library.db in the XDG data folder)."""
    roots: tuple[str, ...] = ()
    """Music folders scanned and watched when no folder is given on the command line."""
    jobs: int = 0
    """Worker processes (0: one per core)."""
    settle_seconds: float = 10.0
    """A file modified more recently than this is left for later (it may still be copying)."""
    path_map: tuple[tuple[str, str], ...] = ()
    """On a cluster worker: (library path, this machine's path) prefixes, for a library that
    this machine mounts somewhere else than the machine that scans it."""


@dataclass(frozen=True)
class TagConfig:
    """Which genres are written into files, and how."""

    write: bool = True
    """Write genres into the files' tags at all (False: only store them in the database)."""
    policy: str = "fill_empty"
    """fill_empty: only files without a genre; replace: overwrite it; append: add ours to it."""
    max_genres: int = 1
    """Genres written per file: 1 writes the decided genre (a style, or its parent); 2 writes
    a certain style and its parent ("House; Electronic")."""
    level: str = "style"
    """style: write a style when its own evidence is certain, else its broad genre; genre:
    write broad genres only."""
    min_score: float = 0.1
    """A genre is written only if its score (mean probability over windows and networks) is
    at least this."""
    min_confidence: float = 0.5
    """A broad genre is written only if the networks name the same one and at least this
    share of their windows vote for it."""
    style_confidence: float = 0.66
    """The stricter gate for a style (and for a broad genre only one network can name)."""
    separator: str = "; "
    """Joins several genres where the format holds one string (ID3v2.3 TCON)."""
    id3_version: int = 3
    """ID3v2 version for files without an ID3 tag (3 is what DJ software reads; an existing
    tag keeps its version, so no other frame is converted)."""
    write_score: bool = False
    """Also write our score into a LIBTAGGER_GENRE_SCORE field."""


TAG_POLICIES = ("fill_empty", "replace", "append")
TAG_LEVELS = ("style", "genre")


@dataclass(frozen=True)
class LimitsConfig:
    """What one file may cost before it is given up (it costs only itself)."""

    seconds_per_file: float = 120.0
    """Wall-clock budget of one file's analysis; past it the worker is killed and replaced.
    A normal track takes under a second; a mix of an hour or more may need a larger budget."""
    memory_mb: int = 2048
    """Address-space cap of each worker process (0: none). The models take about 800 MB."""
    max_tag_mb: int = 16
    """Tags (ID3, Vorbis comments, MP4 metadata) larger than this are refused unread."""
    max_tag_items: int = 10_000
    """Tags with more frames, comments or boxes than this are refused unread."""


@dataclass(frozen=True)
class WatchConfig:
    """How ``libtagger watch`` notices files and schedules its work."""

    quiet_seconds: float = 10.0
    """A file is processed once its size and mtime have not changed for this long."""
    polling: bool = False
    """Poll every root instead of using inotify (network shares); --polling does the same."""
    polling_roots: tuple[str, ...] = ()
    """Roots to poll while the others use inotify."""
    polling_seconds: float = 30.0
    """How often polled roots are compared."""
    reconcile_minutes: float = 60.0
    """A reconcile scan runs at start-up and then this often, to catch what events missed."""
    retry_failed_hours: float = 24.0
    """Jobs parked as failed get a new round of attempts this often."""
    max_attempts: int = 5
    """Attempts before a job is parked as failed, its error kept."""
    backoff_seconds: float = 30.0
    """Delay before the first retry; it doubles with each attempt."""
    lease_seconds: float = 600.0
    """A claimed job that is not finished in this time is given back to the queue."""
    root_check_seconds: float = 30.0
    """How often a vanished root (an unmounted share) is looked for again."""
    stop_grace_seconds: float = 5.0
    """On SIGTERM, how long work in hand may take to finish before it is put back."""
    poll_seconds: float = 0.5
    """How often the queue is checked for due jobs when idle."""


@dataclass(frozen=True)
class PersonalConfig:
    """Your own genres, learned by ``libtagger learn`` and applied by scan and watch."""

    mode: str = "personal"
    """personal: your genres only (below the gate: unknown, nothing written); fallback: the
    default genres when your head is unsure; off: ignore the head."""
    min_probability: float = 0.5
    """A track gets one of your genres only if the head gives it at least this probability."""
    min_tracks: int = 10
    """Genres with fewer user-tagged tracks than this are not learned."""
    folds: int = 5
    """Cross-validation folds (fewer when a genre has fewer tracks)."""
    aliases: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("Drum & Bass", ("DnB", "D&B", "D'n'B", "Drum n Bass", "Drumnbass")),
        ("Hip-Hop", ("Hip Hop", "HipHop")),
        ("R&B", ("RnB", "Rhythm and Blues")),
    )
    """Canonical name -> other spellings that mean the same genre."""


PERSONAL_MODES = ("personal", "fallback", "off")


@dataclass(frozen=True)
class ClusterConfig:
    """Where the classification work runs: this machine's own workers, or a Dask cluster."""

    scheduler: str = ""
    """"" (this machine's worker processes), "local" (a Dask LocalCluster on this machine), or
    a Dask scheduler's address such as "tcp://10.0.0.5:8786". --scheduler overrides it."""
    local_workers: int = 1
    """With "local": Dask worker processes, each running --jobs analysis processes."""
    connect_seconds: float = 60.0
    """How long a scan waits for the scheduler and for its first worker."""


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    library: LibraryConfig = field(default_factory=LibraryConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tags: TagConfig = field(default_factory=TagConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    personal: PersonalConfig = field(default_factory=PersonalConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    genres: tuple[GenreNode, ...] = DEFAULT_GENRES
    """The genre tree, in the order ties are broken."""
    source: str | None = None
    """The file this was read from; None for the built-in defaults."""


def default_config_path() -> Path:
    """``$LIBTAGGER_CONFIG`` or ``config.toml`` in the user's config folder (XDG)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read a TOML file into a :class:`Config`; built-in defaults when there is none.

    An explicit ``path`` must exist; the default location is optional.

    Raises:
        ConfigError: the file is unreadable, not TOML, or has an unknown key or a bad value.
    """
    explicit = path is not None
    config_path = Path(path) if explicit else default_config_path()
    if not config_path.is_file():
        if explicit:
            raise ConfigError(f"config file not found: {config_path}")
        if os.environ.get(CONFIG_ENV):  # asked for by name, like --config: must be there
            raise ConfigError(f"config file not found: {config_path} (from ${CONFIG_ENV})")
        return Config()
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: not valid TOML ({exc})") from exc
    return config_from_dict(data, source=str(config_path))


def config_from_dict(data: Mapping[str, Any], source: str | None = None) -> Config:
    """Validate parsed TOML and build a :class:`Config`.

    Raises:
        ConfigError: unknown key or wrong type; the message names the key.
    """
    where = f"{source}: " if source else ""
    unknown = set(data) - {"library", "classifier", "tags", "watch", "personal", "limits",
                          "cluster", "genres"}
    if unknown:
        raise ConfigError(f"{where}unknown section or key {sorted(unknown)[0]!r}")
    library = _library(data.get("library", {}), where)
    classifier = _section(ClassifierConfig, data.get("classifier", {}), "classifier", where)
    _check_classifier(classifier, where)
    tags = _section(TagConfig, data.get("tags", {}), "tags", where)
    _check_tags(tags, where)
    watch = _section(WatchConfig, data.get("watch", {}), "watch", where)
    for key in ("quiet_seconds", "polling_seconds", "reconcile_minutes", "retry_failed_hours",
                "backoff_seconds", "lease_seconds", "root_check_seconds", "poll_seconds"):
        if getattr(watch, key) <= 0:
            raise ConfigError(f"{where}watch.{key} must be more than 0")
    personal = _personal(data.get("personal", {}), where)
    limits = _section(LimitsConfig, data.get("limits", {}), "limits", where)
    if limits.seconds_per_file <= 0:
        raise ConfigError(f"{where}limits.seconds_per_file must be more than 0")
    if library.settle_seconds < 0:
        raise ConfigError(f"{where}library.settle_seconds must be 0 or more")
    cluster = _section(ClusterConfig, data.get("cluster", {}), "cluster", where)
    if cluster.connect_seconds <= 0:
        raise ConfigError(f"{where}cluster.connect_seconds must be more than 0")
    genres = DEFAULT_GENRES
    if "genres" in data:
        genres = _genres(data["genres"], where)
    return Config(library=library, classifier=classifier, tags=tags, watch=watch,
                  personal=personal, limits=limits, cluster=cluster, genres=genres,
                  source=source)


def _section(cls: type, raw: Any, name: str, where: str) -> Any:
    """Build a frozen dataclass from a TOML table, checking keys and value types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    defaults = cls()
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}unknown key {name}.{key}")
        default = getattr(defaults, key)
        values[key] = _coerce(value, default, f"{name}.{key}", where)
    return cls(**values)


def _coerce(value: Any, default: Any, key: str, where: str) -> Any:
    """Check a value against the type of its default and convert lists to tuples."""
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}{key} must be a list of strings")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}{key} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}{key} must be a whole number")
        return _check_range(value, key, where)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}{key} must be a number")
        if not math.isfinite(value):  # TOML has nan and inf; no setting means either
            raise ConfigError(f"{where}{key} must be a finite number, not {value}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}{key} must be a string")
        return value
    return value


# Every whole-number setting, with the values it may take. A value far past the upper bound
# is a typo, and some would fail only later and obscurely (setrlimit overflows, a pool of 10**30
# processes, 10**12 windows decoded per track).
INT_RANGES: Mapping[str, tuple[int, int]] = {
    "library.jobs": (0, MAX_JOBS),
    "classifier.windows": (1, 64),
    "classifier.top_k": (1, 100),
    "classifier.threads": (1, 64),
    "classifier.batch_size": (1, 64),  # each window costs about 80 MB per model
    "tags.max_genres": (1, 10),
    "tags.id3_version": (3, 4),
    "watch.max_attempts": (1, 1000),
    "personal.min_tracks": (2, 1_000_000),
    "personal.folds": (2, 100),
    "limits.memory_mb": (0, 1 << 20),  # 1 TiB; 0 means no cap
    "limits.max_tag_mb": (1, 1024),
    "limits.max_tag_items": (1, 1_000_000),
    "cluster.local_workers": (1, MAX_JOBS),
}


def _check_range(value: int, key: str, where: str) -> int:
    """A whole number within its declared range (:data:`INT_RANGES`).

    Raises:
        ConfigError: out of range; the message names the key and the range.
    """
    low, high = INT_RANGES[key]
    if not low <= value <= high:
        raise ConfigError(f"{where}{key} must be from {low} to {high}, not {value}")
    return value


def _check_classifier(c: ClassifierConfig, where: str) -> None:
    """Range checks that types alone do not catch."""
    if not c.models:
        raise ConfigError(f"{where}classifier.models must name at least one model")
    if not 0.0 <= c.edge_skip < 0.5:
        raise ConfigError(f"{where}classifier.edge_skip must be in [0, 0.5)")
    if not 0.0 <= c.min_score <= 1.0:
        raise ConfigError(f"{where}classifier.min_score must be in [0, 1]")


def _check_tags(t: TagConfig, where: str) -> None:
    """Range checks for [tags]."""
    if t.policy not in TAG_POLICIES:
        raise ConfigError(f"{where}tags.policy must be one of {', '.join(TAG_POLICIES)}")
    if t.level not in TAG_LEVELS:
        raise ConfigError(f"{where}tags.level must be one of {', '.join(TAG_LEVELS)}")
    for key in ("min_score", "min_confidence", "style_confidence"):
        if not 0.0 <= getattr(t, key) <= 1.0:
            raise ConfigError(f"{where}tags.{key} must be in [0, 1]")
    if not t.separator:
        raise ConfigError(f"{where}tags.separator must not be empty")


def _split_section(cls: type, raw: Any, name: str, inner: str, where: str) -> tuple[Any, Any]:
    """A section with a table of its own under key ``inner``: (the rest, built; that table)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}[{name}] must be a table")
    rest = dict(raw)
    table = rest.pop(inner, None)
    return _section(cls, rest, name, where), table


def _library(raw: Any, where: str) -> LibraryConfig:
    """[library], whose ``path_map`` is a table of "library path" = "path on this machine"."""
    section, path_map = _split_section(LibraryConfig, raw, "library", "path_map", where)
    if path_map is None:
        return section
    if not isinstance(path_map, dict) or not all(
            isinstance(v, str) and v and k for k, v in path_map.items()):
        raise ConfigError(f'{where}[library.path_map] must be a table of "/library/path" = '
                          '"/path/on/this/machine"')
    for key, value in path_map.items():
        if not (os.path.isabs(key) and os.path.isabs(value)):
            raise ConfigError(f"{where}library.path_map: {key!r} = {value!r}: both must be "
                              "absolute paths")
    pairs = tuple((os.path.normpath(k), os.path.normpath(v)) for k, v in path_map.items())
    return replace(section, path_map=pairs)


def _personal(raw: Any, where: str) -> PersonalConfig:
    """[personal], whose ``aliases`` is a table of name = [other spellings]."""
    section, aliases = _split_section(PersonalConfig, raw, "personal", "aliases", where)
    if section.mode not in PERSONAL_MODES:
        raise ConfigError(f"{where}personal.mode must be one of {', '.join(PERSONAL_MODES)}")
    if not 0.0 <= section.min_probability <= 1.0:
        raise ConfigError(f"{where}personal.min_probability must be in [0, 1]")
    if aliases is None:
        return section
    if not isinstance(aliases, dict):
        raise ConfigError(f"{where}[personal.aliases] must be a table of name = [spellings]")
    table = []
    for name, variants in aliases.items():
        if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
            raise ConfigError(f"{where}personal.aliases.{name} must be a list of strings")
        table.append((name, tuple(variants)))
    return replace(section, aliases=tuple(table))


def _genres(raw: Any, where: str) -> tuple[GenreNode, ...]:
    """The [genres] tree. A node is a table ``{tags = [...], parent = "Broad"}``; the old flat
    form ``Name = [tags]`` is a broad genre with those tags. The table replaces the default
    tree as a whole (it says what you want written), so it must be complete.

    Raises:
        ConfigError: a malformed node, an unknown parent, or a style under a style.
    """
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}[genres] must be a non-empty table of genres")
    nodes: list[GenreNode] = []
    for name, value in raw.items():
        if isinstance(value, list):
            value = {"tags": value}
        if not isinstance(value, dict) or set(value) - {"tags", "parent"}:
            raise ConfigError(f"{where}genres.{name} must be a list of model tags or a table "
                              "with tags = [...] and an optional parent = \"Broad genre\"")
        tags, parent = value.get("tags"), value.get("parent")
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{where}genres.{name}.tags must be a non-empty list of model tags")
        if parent is not None and not isinstance(parent, str):
            raise ConfigError(f"{where}genres.{name}.parent must be the name of a broad genre")
        nodes.append(GenreNode(name, tuple(tags), parent))
    broad = {n.name for n in nodes if n.parent is None}
    for node in nodes:
        if node.parent is not None and node.parent not in broad:
            known = ", ".join(sorted(broad)) or "none"
            raise ConfigError(f"{where}genres.{node.name}.parent: {node.parent!r} is not a broad "
                              f"genre of [genres] (broad genres: {known}; a style cannot have "
                              "styles)")
    return tuple(nodes)
