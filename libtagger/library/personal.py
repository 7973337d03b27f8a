"""Your own genres: learn a DJ's taxonomy from the tracks they tagged, apply it to the rest.

Transfer learning on the CNNs' embeddings: the networks learned what music sounds like from
a large dataset; a small linear head learns, from the user's own tagged tracks, which of those
sounds are "Minimal" and which "Hard Techno".

* **Harvest.** Tracks with a stored classification whose genre tag was set by the user: a tag
  libtagger wrote itself (and nobody changed since) never counts. Genre strings are grouped by
  a key that ignores case and punctuation, treats "and"/"n"/"&" alike and applies aliases
  ("DnB" = "Drum & Bass"); a multi-genre field counts by its first genre.
* **Train.** Every window of a track is a sample (its CNN embedding), the track is the unit:
  cross-validation splits by track (``StratifiedGroupKFold``), so no track has windows on
  both sides. A standardised multinomial logistic regression; a track's probabilities are the
  mean of its windows'. No augmentation is used in evaluation.
* **Keep the better head.** A new head replaces the active one only if its cross-validated
  accuracy is at least as good.

The head is a few plain arrays (.npz form, no pickle) stored in the ``heads`` table, so that
every machine sharing a database applies the same head.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select, update

from libtagger.config import Config
from libtagger.library.db import Head, Library, TagWrite, Track, utcnow
from libtagger.analysis.head import PersonalHead
from libtagger.errors import LearnError
from libtagger.analysis.evaluate import Evaluation, score_predictions
from libtagger.analysis.vote import normalise_genre

# A track needs at least this many windows to be a training example.
MIN_WINDOWS = 1


def genre_key(name: str, aliases: dict[str, str] | None = None) -> str:
    """The grouping key of a genre string: "Drum and Bass" = "Drum 'n' Bass" = "drum&bass"."""
    text = f" {name.casefold()} "
    text = re.sub(r"\s+(and|'n'|n|&)\s+", "&", text)
    key = normalise_genre(text)
    return (aliases or {}).get(key, key)


def alias_table(config: Config) -> dict[str, str]:
    """Variant key -> canonical key, from ``[personal] aliases``."""
    table: dict[str, str] = {}
    for canonical, variants in config.personal.aliases:
        target = genre_key(canonical)
        for variant in (canonical, *variants):
            table[genre_key(variant)] = target
    return table


@dataclass(frozen=True)
class TaggedTrack:
    """A track the user tagged: its windows' embeddings and its (first) genre."""

    track_id: int
    path: str
    genre: str
    key: str
    embeddings: np.ndarray
    default_genres: list[str]


GenresOf = Callable[[list[str]], dict[str, list[str] | str]]
"""Reads the genres of many files (in isolated workers): path -> genres, or why not."""


def harvest(library: Library, config: Config, genres_of: GenresOf,
            roots: list[str] | None = None) -> list[TaggedTrack]:
    """The user-tagged tracks with embeddings from the current models (optionally under roots).

    A genre libtagger wrote (and nobody changed since) is not the user's; one an ``undo`` put
    back is. ``genres_of`` reads the files' tags (``libtagger.pipeline.batch.genres_of``).
    """
    aliases = alias_table(config)
    prefixes = [os.path.realpath(os.path.expanduser(r)).rstrip(os.sep) + os.sep for r in roots or []]
    out: list[TaggedTrack] = []
    with library.session() as session:
        tracks = [t for t in session.scalars(select(Track).where(Track.status == "done")).all()
                  if not prefixes or any(t.path.startswith(p) for p in prefixes)]
        ours: dict[int, list[str]] = {}
        for write in session.scalars(
            select(TagWrite).where(TagWrite.state == "written", TagWrite.kind == "write")
            .order_by(TagWrite.id)
        ):
            ours[write.track_id] = list(write.after)  # the latest write wins
        current = genres_of([t.path for t in tracks])
        for track in tracks:
            found = track.classification
            matrix = found.embedding_matrix() if found else None
            if matrix is None or len(matrix) < MIN_WINDOWS:
                continue
            genres = current.get(track.path)
            if not isinstance(genres, list):
                continue  # unreadable now: not evidence either way
            genres = [g for g in genres if g.strip()]
            if not genres:
                continue
            written = ours.get(track.id)
            if written is not None and [normalise_genre(g) for g in written] == [
                normalise_genre(g) for g in genres
            ]:
                continue  # what we wrote ourselves: not the user's word
            out.append(TaggedTrack(track.id, track.path, genres[0].strip(),
                                   genre_key(genres[0], aliases), matrix,
                                   [g.genre for g in found.genres]))
    return out


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardise and fit a balanced multinomial logistic regression; return its arrays."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    model = LogisticRegression(max_iter=2000, class_weight="balanced", C=0.5)
    model.fit((x - mean) / scale, y)
    return mean, scale, model.coef_.astype(np.float32), model.intercept_.astype(np.float32)


@dataclass
class LearnReport:
    """What ``learn`` measured and decided."""

    genres: dict[str, int]
    """Genre -> tracks, for the genres kept."""
    dropped: dict[str, int]
    """Genres with too few tracks."""
    personal: Evaluation
    default: Evaluation
    accuracy_interval: tuple[float, float]
    folds: int
    head_id: int | None = None
    activated: bool = False
    previous_accuracy: float | None = None
    refused: str | None = None
    """Why the head was not activated (it must beat the default genres and the active head)."""


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of an accuracy (Wilson score): honest error bars for few tracks."""
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def track_folds(y: np.ndarray, groups: np.ndarray,
                folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation splits of window samples where a track (group) is never split."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def learn(library: Library, config: Config, model_name: str, genres_of: GenresOf,
          roots: list[str] | None = None, force: bool = False,
) -> LearnReport:
    """Harvest, cross-validate, train on everything, save, and activate if no worse.

    Raises:
        LearnError: fewer than two genres with enough tracks.
    """
    tracks = harvest(library, config, genres_of, roots)
    counts = Counter(t.key for t in tracks)
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for t in tracks:
        spellings[t.key][t.genre] += 1
    canonical = {genre_key(name): name for name, _ in config.personal.aliases}
    # An alias table's own name for a group wins; else its most common spelling, ties going
    # to a capitalised, not all-caps one ("Deep Drone" over "deep-drone" and "DEEP DRONE").
    display = {
        k: canonical.get(k) or min(c, key=lambda name, c=c: (
            -c[name], not name[:1].isupper(), name.isupper(), name))
        for k, c in spellings.items()
    }
    minimum = config.personal.min_tracks
    kept = sorted(k for k, n in counts.items() if n >= minimum)
    dropped = {display[k]: n for k, n in counts.items() if n < minimum}
    if len(kept) < 2:
        raise LearnError(
            f"need at least 2 genres with {minimum} or more user-tagged tracks; found "
            + (", ".join(f"{display[k]} ({n})" for k, n in counts.most_common(8)) or "none")
        )
    usable = [t for t in tracks if t.key in kept]
    index = {k: i for i, k in enumerate(kept)}
    x = np.concatenate([t.embeddings for t in usable])
    y = np.concatenate([np.full(len(t.embeddings), index[t.key]) for t in usable])
    groups = np.concatenate([np.full(len(t.embeddings), t.track_id) for t in usable])

    folds = max(2, min(config.personal.folds, min(counts[k] for k in kept)))
    predicted: dict[int, np.ndarray] = {}
    for train, test in track_folds(y, groups, folds):
        mean, scale, coef, intercept = _fit(x[train], y[train])
        fold_head = PersonalHead([display[k] for k in kept], mean, scale, coef, intercept,
                                 model_name)
        for track_id in np.unique(groups[test]):
            rows = test[groups[test] == track_id]
            predicted[int(track_id)] = fold_head.window_probabilities(x[rows]).mean(axis=0)
    aliases = alias_table(config)

    def key(name: str) -> str:
        return genre_key(name, aliases)

    personal_items, default_items = [], []
    for t in usable:
        order = np.argsort(-predicted[t.track_id])
        personal_items.append((t.path, display[t.key], [display[kept[i]] for i in order]))
        default_items.append((t.path, display[t.key], t.default_genres))
    personal = score_predictions(f"personal head ({folds}-fold CV)", personal_items, key=key)
    default = score_predictions(model_name, default_items, key=key)
    correct = sum(f["correct"] for f in personal.files)

    mean, scale, coef, intercept = _fit(x, y)
    head = PersonalHead([display[k] for k in kept], mean, scale, coef, intercept, model_name,
                        {"tracks": len(usable), "created": utcnow().isoformat(),
                         "trained_on": [t.path for t in usable]})
    report = LearnReport(
        genres={display[k]: counts[k] for k in kept}, dropped=dropped, personal=personal,
        default=default, accuracy_interval=wilson_interval(correct, len(usable)), folds=folds,
    )
    _store(library, head, report, force)
    return report


def _store(library: Library, head: PersonalHead, report: LearnReport, force: bool) -> None:
    """Record the head in the database, and activate it if it is no worse than the active one."""
    metrics = {"accuracy": report.personal.accuracy, "interval": report.accuracy_interval,
               "per_genre": report.personal.per_genre, "default_accuracy": report.default.accuracy,
               "folds": report.folds}
    with library.session() as session:
        active = session.scalars(select(Head).where(Head.active.is_(True))).first()
        previous = active.metrics.get("accuracy") if active and active.model == head.model else None
        row = Head(data=head.to_bytes(), model=head.model, genres=head.genres,
                   tracks=head.meta["tracks"], metrics=metrics, active=False)
        session.add(row)
        session.flush()
        report.head_id = row.id
        report.previous_accuracy = previous
        # A head must beat the default genres on the very tracks it was measured on, and be
        # no worse than the active one; --force overrides both.
        beats_default = report.personal.accuracy > report.default.accuracy
        if not beats_default:
            report.refused = (f"it scored {report.personal.accuracy:.1%}, no better than the "
                              f"default genres' {report.default.accuracy:.1%} on the same tracks")
        elif previous is not None and report.personal.accuracy < previous:
            report.refused = (f"it scored {report.personal.accuracy:.1%}, the active head "
                              f"{previous:.1%}")
        if force or report.refused is None:
            session.execute(update(Head).values(active=False))
            row.active = True
            report.activated = True


def active_head_id(library: Library, model_name: str) -> int | None:
    """The id of the active head trained on these models' embeddings, if there is one."""
    with library.reader() as session:
        return session.scalar(select(Head.id).where(*_usable(model_name)).limit(1))


def active_head(library: Library, model_name: str) -> PersonalHead | None:
    """The active head trained on these models' embeddings, if there is one."""
    with library.reader() as session:
        row = session.execute(
            select(Head.id, Head.data).where(*_usable(model_name)).limit(1)).first()
    return PersonalHead.from_bytes(row.data, f"personal head {row.id}") if row else None


def _usable(model_name: str) -> tuple[Any, ...]:
    """The active head of these models, with its arrays (one migrated without is never used)."""
    return Head.active.is_(True), Head.model == model_name, Head.data.is_not(None)
