"""Window tag probabilities → track genres.

The rule, in three steps:

1. **Tags to genres, per window.** The vocabulary maps each canonical genre to model tags
   (``Rock`` ← rock, classic rock, hard rock, …). A window's score for a genre is the highest
   probability among that genre's tags in one model; with several models it is the mean over
   the models that know at least one of its tags.
2. **Windows to track.** A genre's track ``score`` is the mean of its window scores over the
   windows that vote (silent windows do not).
3. **Confidence.** Each voting window names its best genre; a genre's ``confidence`` is the
   share of windows that named it. A track that is Rock throughout gets confidence 1.0; a mix
   that is half House, half Techno gets about 0.5 for each.

Genres are ranked by score; ``top_k`` are reported, and none below ``min_score``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def normalise_genre(name: str) -> str:
    """Compare genre names ignoring case and punctuation: "Hip-Hop" == "hiphop"."""
    text = name.casefold().replace("&", "n")
    return re.sub(r"[\W_]+", "", text)


@dataclass(frozen=True)
class GenreScore:
    """One genre for a track (or a window) with its score and confidence."""

    genre: str
    score: float
    """Mean probability of the genre's best tag over voting windows (0-1)."""
    confidence: float
    """Share of voting windows whose best genre this is (0-1)."""


class Vocabulary:
    """The genre table applied to a set of models' labels."""

    def __init__(self, table: Mapping[str, Sequence[str]], model_labels: Sequence[Sequence[str]]):
        self.genres: tuple[str, ...] = tuple(table)
        # For each model, for each genre: indices of the labels that count as it.
        self._indices: list[list[list[int]]] = []
        for labels in model_labels:
            by_tag = {normalise_genre(label): i for i, label in enumerate(labels)}
            self._indices.append(
                [
                    [by_tag[normalise_genre(tag)] for tag in table[g] if normalise_genre(tag) in by_tag]
                    for g in self.genres
                ]
            )

    def unmapped(self) -> list[str]:
        """Genres none of the models can produce (a config mistake worth reporting)."""
        return [
            g
            for gi, g in enumerate(self.genres)
            if not any(model[gi] for model in self._indices)
        ]

    def window_scores(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """Genre scores [windows, genres] from each model's tag probabilities [windows, tags].

        Genres no model knows score NaN.
        """
        n = probabilities[0].shape[0]
        total = np.zeros((n, len(self.genres)), dtype=np.float64)
        count = np.zeros(len(self.genres), dtype=np.int64)
        for probs, indices in zip(probabilities, self._indices, strict=True):
            for gi, idx in enumerate(indices):
                if idx:
                    total[:, gi] += probs[:, idx].max(axis=1)
                    count[gi] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / np.where(count > 0, count, np.nan)


def vote(
    scores: np.ndarray,
    genres: Sequence[str],
    voting: np.ndarray | None = None,
    top_k: int = 3,
    min_score: float = 0.0,
) -> list[GenreScore]:
    """Track genres, best first, from window genre scores [windows, genres].

    ``voting`` is a boolean mask of the windows that count (default: all). No voting window,
    no genres.
    """
    if voting is None:
        voting = np.ones(scores.shape[0], dtype=bool)
    chosen = scores[voting]
    if chosen.shape[0] == 0:
        return []
    usable = ~np.isnan(chosen).all(axis=0)
    filled = np.where(np.isnan(chosen), -1.0, chosen)
    track = np.where(usable, filled.mean(axis=0), -1.0)
    winners = np.bincount(filled.argmax(axis=1), minlength=len(genres)) / chosen.shape[0]
    order = np.argsort(-track, kind="stable")
    result = []
    for gi in order[:top_k]:
        if not usable[gi] or track[gi] < min_score:
            break
        result.append(GenreScore(genres[gi], round(float(track[gi]), 4), round(float(winners[gi]), 4)))
    return result
