"""libtagger for beets: genres from the audio itself, under beets' own rules.

Enable it in beets' ``config.yaml`` (``pip install 'libtagger[beets]'`` installs it)::

    plugins: libtagger
    libtagger:
        auto: yes            # classify on `beet import`
        overwrite: no        # keep a genre an item already has (`beet libtagger -f` overrides)
        jobs: 0              # worker processes; 0: libtagger's library.jobs, else one per core
        config: ""           # a libtagger config.toml ("": libtagger's usual one, if any)
        min_confidence: null # override tags.min_confidence of that config (0-1)
        max_genres: 1        # 2 also keeps a certain style's parent ("House; Electronic")
        batch: 50            # items classified per worker pool

``beet libtagger [-f/--force] [-n/--dry-run] [-w/-W] [QUERY]`` classifies the matching items.

Every classified item gets flexible attributes: ``libtagger_genre`` (what libtagger decided,
applied or not; absent when nothing was certain), ``libtagger_score``, ``libtagger_confidence``
(share of the networks' votes) and ``libtagger_reason``. beets' ``genres`` field is set only
when the decision is not empty and the item has no genre yet (or ``overwrite``/``--force``).
Files are written by beets itself (``item.try_write()``), only when beets' ``import.write`` is
on (``beet libtagger -w/-W`` decide for one run, as in ``beet modify``); libtagger's own tag
writer is never used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from beets import library, ui, util
from beets.dbcore import types
from beets.plugins import BeetsPlugin

if TYPE_CHECKING:
    from libtagger.analysis.classify import TrackResult
    from libtagger.config import Config

# libtagger's engine (numpy, PyAV, TFLite) is imported only when something is classified:
# beets loads every plugin for every command, and `beet ls` should not pay for it.

# beets 2.x keeps genres as a list field (``genres``); older 2.x releases had one ``genre``
# string. Joined values use beets' own multi-value delimiter for display and `beet modify`.
GENRE_FIELD = "genres" if "genres" in library.Item._fields else "genre"
JOIN = "; "

FLEX = ("libtagger_genre", "libtagger_score", "libtagger_confidence", "libtagger_reason")


@dataclass(frozen=True)
class Verdict:
    """What libtagger makes of one item: the values to store and whether ``genres`` changes."""

    genres: tuple[str, ...]
    """The decided genres (at most ``max_genres``); empty when nothing is certain."""
    score: float
    confidence: float
    reason: str
    apply: bool
    """Whether beets' genre field takes ``genres``."""
    why_not: str = ""
    """Why a decided genre is not applied (the item keeps its own)."""


def current_genres(item: library.Item) -> list[str]:
    """The genres an item has now in beets' database."""
    value = item.get(GENRE_FIELD, with_album=False)
    if isinstance(value, str):
        return [g for g in (s.strip() for s in value.split(JOIN)) if g]
    return [g for g in (value or []) if g]


def set_genres(item: library.Item, genres: Sequence[str]) -> None:
    """Set beets' genre field the way this beets stores it."""
    item[GENRE_FIELD] = list(genres) if GENRE_FIELD == "genres" else JOIN.join(genres)


def judge(item: library.Item, result: TrackResult, max_genres: int, force: bool) -> Verdict:
    """Turn one classification into what beets should store, keeping the item's own genre."""
    decision = result.decision
    genres = tuple(decision.genres[:max_genres]) if decision else ()
    named = genres[0] if genres else (decision.candidate if decision else None)
    scores = {g.genre: g.score for g in result.genres}
    score = scores.get(named, result.genres[0].score if result.genres else 0.0) if named else 0.0
    confidence = decision.confidence if decision else 0.0
    reason = decision.reason if decision else "no genre decision for this track"
    existing = current_genres(item)
    if not genres or list(genres) == existing:
        return Verdict(genres, score, confidence, reason, apply=False)
    if existing and not force:
        return Verdict(genres, score, confidence, reason, apply=False,
                       why_not=f"keeps its own genre {JOIN.join(existing)!r} (overwrite: no)")
    return Verdict(genres, score, confidence, reason, apply=True)


def record(item: library.Item, verdict: Verdict) -> None:
    """Put a verdict on the item (flexible attributes, and the genre when it applies)."""
    if verdict.genres:
        item["libtagger_genre"] = JOIN.join(verdict.genres)
    elif "libtagger_genre" in item.keys(with_album=False):
        del item["libtagger_genre"]  # a stale decision from an earlier run
    item["libtagger_score"] = round(float(verdict.score), 4)
    item["libtagger_confidence"] = round(float(verdict.confidence), 4)
    item["libtagger_reason"] = verdict.reason
    if verdict.apply:
        set_genres(item, verdict.genres)


def describe(item: library.Item) -> str:
    """How log lines name an item: beets' "artist - album - title", or its path when untagged."""
    if item.title or item.artist:
        return str(item)
    return util.displayable_path(item.path)


def chunks(items: Sequence[library.Item], size: int) -> Iterator[Sequence[library.Item]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LibtaggerPlugin(BeetsPlugin):
    """Classify items' audio with libtagger and set their genre."""

    item_types = {"libtagger_score": types.FLOAT, "libtagger_confidence": types.FLOAT}

    def __init__(self) -> None:
        super().__init__()
        self.config.add({"auto": True, "overwrite": False, "jobs": 0, "config": "",
                         "min_confidence": None, "max_genres": 1, "batch": 50})
        self._engine: Config | None = None
        self._lock = threading.Lock()
        self._unwritten: set[int] = set()
        """Ids of items imported with a new genre, written once beets has copied them."""
        if self.config["auto"].get(bool):
            self.import_stages = [self.import_stage]
            self.register_listener("import_begin", self.check_config)
            self.register_listener("import_task_files", self.write_imported)

    # --- set-up ---------------------------------------------------------------------------

    def engine_config(self) -> Config:
        """libtagger's config with this plugin's overrides, read once.

        Raises:
            UserError: the config file is missing or invalid, or an override is out of range.
        """
        from libtagger.config import load_config
        from libtagger.errors import LibtaggerError

        with self._lock:
            if self._engine is None:
                path = self.config["config"].as_str() or None
                try:
                    config = load_config(os.path.expanduser(path) if path else None)
                except LibtaggerError as exc:
                    raise ui.UserError(f"libtagger: {exc}") from exc
                tags = replace(config.tags, max_genres=self.max_genres())
                override = self.config["min_confidence"].get()
                if override is not None:
                    value = float(override)
                    if not 0.0 <= value <= 1.0:
                        raise ui.UserError("libtagger: min_confidence must be between 0 and 1")
                    tags = replace(tags, min_confidence=value)
                self._engine = replace(config, tags=tags)
            return self._engine

    def max_genres(self) -> int:
        """Genres set per item (``max_genres``, in the range of libtagger's tags.max_genres).

        Raises:
            UserError: out of that range.
        """
        from libtagger.config import INT_RANGES

        return self._bounded("max_genres", *INT_RANGES["tags.max_genres"])

    def jobs(self, config: Config) -> int:
        """Worker processes: the plugin's ``jobs``, else libtagger's, else one per core.

        Raises:
            UserError: ``jobs`` is out of the range of libtagger's library.jobs.
        """
        from libtagger.config import INT_RANGES

        jobs = self._bounded("jobs", *INT_RANGES["library.jobs"])
        return jobs or config.library.jobs or os.cpu_count() or 1

    def _bounded(self, key: str, low: int, high: int) -> int:
        """A whole-number option of this plugin, within [low, high]."""
        value = self.config[key].get(int)
        if not low <= value <= high:
            raise ui.UserError(f"libtagger: {key} must be from {low} to {high}, not {value}")
        return value

    # --- the work -------------------------------------------------------------------------

    def classify(self, items: Sequence[library.Item], force: bool,
                 ) -> Iterator[tuple[library.Item, Verdict | str]]:
        """(item, verdict) for every item, or (item, why it could not be classified).

        Raises:
            UserError: libtagger's config or models cannot be used.
        """
        from libtagger.analysis.classify import Failure
        from libtagger.errors import LibtaggerError
        from libtagger.pipeline.batch import classify_many

        config = self.engine_config()
        jobs, size, max_genres = self.jobs(config), self.config["batch"].get(int), self.max_genres()
        for batch in chunks(items, max(1, size)):
            by_path = {os.fsdecode(item.path): item for item in batch}
            try:
                for result in classify_many(list(by_path), config, jobs):
                    item = by_path[result.path]
                    if isinstance(result, Failure):
                        yield item, result.reason
                    else:
                        yield item, judge(item, result, max_genres, force)
            except LibtaggerError as exc:
                raise ui.UserError(f"libtagger: {exc}") from exc

    def process(self, items: Iterable[library.Item], force: bool, pretend: bool,
                ) -> list[library.Item]:
        """Classify, log and (unless ``pretend``) store; returns the items whose genre changed."""
        changed = []
        for item, verdict in self.classify(list(items), force):
            if isinstance(verdict, str):
                self._log.warning("cannot classify {}: {}", describe(item), verdict)
                if not pretend:
                    item["libtagger_reason"] = f"not classified: {verdict}"
                    item.store()
                continue
            self.report(item, verdict, pretend)
            if not pretend:
                record(item, verdict)
                item.store()
                if verdict.apply:
                    changed.append(item)
        return changed

    def report(self, item: library.Item, verdict: Verdict, pretend: bool) -> None:
        """One info line per item: what is (or would be) set, and why."""
        would = "would set" if pretend else "set"
        if not verdict.genres:
            self._log.info("{}: nothing certain ({})", describe(item), verdict.reason)
        elif verdict.apply:
            self._log.info("{}: {} genre {} ({:.0%} of votes; {})", describe(item), would,
                           JOIN.join(verdict.genres), verdict.confidence, verdict.reason)
        elif verdict.why_not:
            self._log.info("{}: {}; libtagger says {}", describe(item), verdict.why_not,
                           JOIN.join(verdict.genres))
        else:
            self._log.info("{}: already {}", describe(item), JOIN.join(verdict.genres))

    # --- beets hooks ----------------------------------------------------------------------

    def check_config(self, session: Any) -> None:
        """Stop an import with a bad libtagger config before beets adds anything to the library
        (a failing import stage would leave items added but not copied)."""
        self.jobs(self.engine_config())

    def import_stage(self, session: Any, task: Any) -> None:
        """Classify a task's items before beets copies and writes them (so path formats may use
        ``$genres``); the files are written after the copy, in :meth:`write_imported`."""
        items = task.imported_items()
        changed = self.process(items, force=self.config["overwrite"].get(bool), pretend=False)
        with self._lock:
            self._unwritten.update(item.id for item in changed)
        if getattr(task, "is_album", False) and task.album is not None:
            self.settle_album(task.album, items)

    def settle_album(self, album: library.Album, items: Sequence[library.Item]) -> None:
        """Give an album without a genre the one all its tracks now share (tracks untouched)."""
        shared = {tuple(current_genres(item)) for item in items}
        album_genres = album.get(GENRE_FIELD)
        if len(shared) == 1 and (genres := shared.pop()) and not album_genres:
            album[GENRE_FIELD] = list(genres) if GENRE_FIELD == "genres" else JOIN.join(genres)
            album.store(inherit=False)

    def write_imported(self, session: Any, task: Any) -> None:
        """Write the new genres into the library's copies, when beets' import writes tags."""
        write = session.config["write"].get(bool)
        for item in task.imported_items():
            with self._lock:
                if item.id not in self._unwritten:
                    continue
                self._unwritten.discard(item.id)
            if write and item.try_write():
                item.store()  # the new mtime

    def commands(self) -> list[ui.Subcommand]:
        """``beet libtagger [-f] [-n] [-w|-W] [QUERY]``."""
        command = ui.Subcommand("libtagger", help="set genres from the audio with libtagger")
        command.parser.add_option("-f", "--force", action="store_true", default=None,
                                  help="replace a genre the item already has")
        command.parser.add_option("-n", "--dry-run", "--pretend", dest="pretend",
                                  action="store_true", default=False,
                                  help="show what would be set; store and write nothing")
        command.parser.add_option("-w", "--write", action="store_true", default=None,
                                  help="write tags to files (default: import.write)")
        command.parser.add_option("-W", "--nowrite", action="store_false", dest="write",
                                  help="do not write tags to files")

        def run(lib: library.Library, opts: Any, args: list[str]) -> None:
            force = self.config["overwrite"].get(bool) if opts.force is None else opts.force
            items = list(lib.items(args))
            if not items:
                self._log.info("no items match {}", " ".join(args) or "the library")
                return
            changed = self.process(items, force=force, pretend=opts.pretend)
            if not opts.pretend and ui.should_write(opts.write):
                for item in changed:
                    if item.try_write():
                        item.store()

        command.func = run
        return [command]
