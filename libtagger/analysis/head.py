"""A personal genre head: the user's own genres as a linear layer over the CNNs' embeddings.

Applying it needs numpy only; learning one (``libtagger.library.personal``) needs the library.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from libtagger.analysis.vote import GenreScore
from libtagger.errors import LearnError

HEAD_FORMAT = 1


@dataclass
class PersonalHead:
    """A trained head: standardisation and a linear layer over window embeddings."""

    genres: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    model: str
    meta: dict[str, Any] = field(default_factory=dict)

    def window_probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Genre probabilities [windows, genres] (numpy only: no scikit-learn at run time)."""
        z = (np.asarray(embeddings, dtype=np.float32) - self.mean) / self.scale
        logits = z @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # two genres: one logistic output
            p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def vote(self, embeddings: np.ndarray, voting: np.ndarray, top_k: int) -> list[GenreScore]:
        """Track genres from the voting windows: mean probability, and window agreement."""
        if not voting.any():
            return []
        probs = self.window_probabilities(embeddings[voting])
        track = probs.mean(axis=0)
        winners = np.bincount(probs.argmax(axis=1), minlength=len(self.genres)) / len(probs)
        order = np.argsort(-track, kind="stable")[:top_k]
        return [GenreScore(self.genres[i], round(float(track[i]), 4), round(float(winners[i]), 4))
                for i in order]

    def to_bytes(self) -> bytes:
        """The head as plain arrays in .npz form (what the database stores)."""
        meta = {**self.meta, "format": HEAD_FORMAT, "model": self.model, "genres": self.genres}
        out = io.BytesIO()
        np.savez(out, mean=self.mean, scale=self.scale, coef=self.coef,
                 intercept=self.intercept, meta=np.array(json.dumps(meta)))
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "the personal head") -> PersonalHead:
        """Read a head written by :meth:`to_bytes`.

        Raises:
            LearnError: the data is damaged or of an unknown format.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                meta = json.loads(str(arrays["meta"]))
                if meta.get("format") != HEAD_FORMAT:
                    raise LearnError(f"{name}: unknown head format {meta.get('format')!r}")
                return cls(list(meta["genres"]), arrays["mean"], arrays["scale"],
                           arrays["coef"], arrays["intercept"], meta["model"], meta)
        except (OSError, ValueError, KeyError) as exc:
            raise LearnError(f"cannot read {name}: {exc}") from exc
