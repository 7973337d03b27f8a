"""The genre tree and the rule that decides what is written: the finest genre that is certain.

Two networks trained on different data (musicnn on the Million Song Dataset and MagnaTagATune,
EfficientAT on AudioSet) are rarely wrong the same way, so the rule asks them to agree:

1. **Scores.** Each network scores every node of the tree in every window: the best of the
   node's tags in each of its models, averaged over the models that know one. A broad genre
   also counts its styles (a Techno window is an Electronic window).
2. **Broad genre.** Each window votes for its best broad genre; a network names the broad genre
   with the best mean score. The broad genre is *agreed* when every network that can name it
   ranks it first. Its confidence is the share of votes for it, averaged over those networks.
   It is written when the confidence reaches ``tags.min_confidence``; a genre only one of
   several networks can name (Reggae, Latin, Disco, World) must reach the stricter
   ``tags.style_confidence``.
3. **Style.** Under the agreed broad genre, each window votes for its best style in the same
   way; the style is written instead of its parent when the networks that know it agree and
   its share reaches ``tags.style_confidence``. Otherwise the parent is written ("Electronic"
   when House vs Techno is unclear).
4. **Nothing** is written when the networks disagree or the votes fall short; the result is
   stored with the reason, which ``libtagger show`` prints.

The confidence shown to users is that share of votes: 0.8 means four windows in five, in each
network, said this genre.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from libtagger.analysis.vote import GenreScore, normalise_genre
from libtagger.config import GenreNode, TagConfig


@dataclass(frozen=True)
class Decision:
    """What the tree decided for one track, and why."""

    genres: tuple[str, ...] = ()
    """What would be written, finest first; empty when nothing is certain."""
    level: str | None = None
    """style, genre, personal, or None (nothing decided)."""
    confidence: float = 0.0
    """Share of the networks' window votes for the decided genre (0-1)."""
    reason: str = ""
    """Why this was decided, or why nothing was: shown by ``libtagger show``."""
    networks: dict[str, str] = field(default_factory=dict)
    """Each network's own best broad genre."""
    candidate: str | None = None
    """The agreed broad genre even when its votes fell short of the gate (``confidence`` is
    then its share): what a lower gate would write (``evaluate``'s precision curve)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with the classification)."""
        return {"genres": list(self.genres), "level": self.level,
                "confidence": round(self.confidence, 4), "reason": self.reason,
                "networks": dict(self.networks), "candidate": self.candidate}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Decision | None:
        """The inverse of :meth:`to_dict` (None for a classification stored before the tree)."""
        if not data:
            return None
        return cls(tuple(data.get("genres", ())), data.get("level"),
                   float(data.get("confidence", 0.0)), str(data.get("reason", "")),
                   dict(data.get("networks", {})), data.get("candidate"))


@dataclass(frozen=True)
class NetworkVotes:
    """One network's scores for one track: node scores per voting window."""

    name: str
    scores: np.ndarray
    """[voting windows, nodes]; NaN where the network knows none of a node's tags."""


class GenreTree:
    """The configured tree, mapped onto every network's model labels."""

    def __init__(self, nodes: Sequence[GenreNode], networks: Sequence[Sequence[Sequence[str]]]):
        """``networks``: for each network, its models' label lists."""
        self.nodes = tuple(nodes)
        self.names = tuple(n.name for n in self.nodes)
        index = {n.name: i for i, n in enumerate(self.nodes)}
        self.broad = np.array([i for i, n in enumerate(self.nodes) if n.parent is None])
        self.styles = np.array([i for i, n in enumerate(self.nodes) if n.parent is not None],
                               dtype=int)
        self.parent = np.array([index[n.parent] if n.parent else -1 for n in self.nodes])
        # For each network, each model, each node: the label indices that count as the node.
        self._indices = [
            [[[by_tag[normalise_genre(t)] for t in node.tags if normalise_genre(t) in by_tag]
              for node in self.nodes]
             for by_tag in ({normalise_genre(label): i for i, label in enumerate(labels)}
                            for labels in models)]
            for models in networks
        ]

    def unmapped(self) -> list[str]:
        """Nodes no network can name (a config mistake worth reporting)."""
        return [name for i, name in enumerate(self.names)
                if not any(model[i] for network in self._indices for model in network)]

    def window_scores(self, network: int, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """Node scores [windows, nodes] of one network from its models' probabilities.

        A broad genre scores the best of its own tags and its styles' scores.
        """
        n = probabilities[0].shape[0]
        total = np.zeros((n, len(self.nodes)))
        count = np.zeros(len(self.nodes))
        for probs, indices in zip(probabilities, self._indices[network], strict=True):
            for i, idx in enumerate(indices):
                if idx:
                    total[:, i] += probs[:, idx].max(axis=1)
                    count[i] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = total / np.where(count > 0, count, np.nan)
        for style in self.styles:
            parent = self.parent[style]
            scores[:, parent] = np.fmax(scores[:, parent], scores[:, style])
        return scores

    # --- the decision -------------------------------------------------------------------------

    def decide(self, votes: Sequence[NetworkVotes], tags: TagConfig) -> Decision:
        """The rule of the module docstring."""
        votes = [v for v in votes if v.scores.shape[0]]
        if not votes:
            return Decision(reason="silent: no window loud enough to vote")
        tops = {v.name: self._top(v, self.broad) for v in votes}
        named = {v.name: self.names[t] for v, t in zip(votes, tops.values(), strict=True)
                 if t is not None}
        broad, knowing, conflict = self._agreed(votes, self.broad)
        if broad is None:
            return Decision(reason=_disagreement(conflict, "networks disagree"), networks=named)
        share = self._share(knowing, self.broad, broad)
        score = _mean([float(np.nanmean(v.scores[:, broad])) for v in knowing])
        single = len(knowing) < len(votes)
        gate = tags.style_confidence if single else tags.min_confidence
        name = self.names[broad]
        if share < gate:
            who = " (only one network can name it)" if single else ""
            return Decision(confidence=share, reason=f"below the gate: {share:.0%} of votes for "
                            f"{name}{who}, needs {gate:.0%}", networks=named, candidate=name)
        if score < tags.min_score:
            return Decision(confidence=share, reason=f"{name} scores {score:.2f}, below "
                            f"tags.min_score {tags.min_score:g}", networks=named, candidate=name)
        agreed = "the networks agree" if len(knowing) > 1 else f"{knowing[0].name} alone"
        parent = Decision((name,), "genre", share, f"{name}: {agreed}, {share:.0%} of votes",
                          named, name)
        children = self.styles[self.parent[self.styles] == broad]
        if tags.level != "style" or not len(children):
            return parent
        style, style_knowing, conflict = self._agreed(votes, children)
        if style is None:
            if conflict:
                return _with_reason(parent, _disagreement(conflict, "style unclear"))
            return parent
        style_share = self._share(style_knowing, children, style)
        style_score = _mean([float(np.nanmean(v.scores[:, style])) for v in style_knowing])
        style_name = self.names[style]
        if style_share < tags.style_confidence:
            return _with_reason(parent, f"style unclear: {style_share:.0%} of votes for "
                                        f"{style_name}, needs {tags.style_confidence:.0%}")
        if style_score < tags.min_score:
            return _with_reason(parent, f"style {style_name} scores {style_score:.2f}, below "
                                        f"tags.min_score {tags.min_score:g}")
        genres = (style_name, name)[: max(1, tags.max_genres)]
        return Decision(genres, "style", style_share,
                        f"{style_name}: {style_share:.0%} of {name} votes", named, name)

    def ranked(self, votes: Sequence[NetworkVotes], top_k: int, min_score: float,
               first: Sequence[str] = ()) -> list[GenreScore]:
        """Every node by its score (mean over the networks that know it), ``first`` leading."""
        votes = [v for v in votes if v.scores.shape[0]]
        if not votes:
            return []
        rows = []
        for i, name in enumerate(self.names):
            knowing = [v for v in votes if not np.isnan(v.scores[:, i]).all()]
            if not knowing:
                continue
            score = _mean([float(np.nanmean(v.scores[:, i])) for v in knowing])
            level = self.broad if self.parent[i] < 0 else self.styles
            share = self._share(knowing, level, i)
            rows.append(GenreScore(name, round(score, 4), round(share, 4)))
        rows.sort(key=lambda g: (g.genre not in first, -g.score))
        return [g for g in rows if g.genre in first or g.score >= min_score][:top_k]

    def _top(self, votes: NetworkVotes, among: np.ndarray) -> int | None:
        """The network's best node among ``among`` by mean score (None: it knows none)."""
        block = votes.scores[:, among]
        if not len(among) or np.isnan(block).all():
            return None
        with warnings.catch_warnings():  # a node this network cannot name is all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            track = np.nanmean(block, axis=0)
        return int(among[int(np.nanargmax(track))])

    def _agreed(self, votes: Sequence[NetworkVotes], among: np.ndarray
                ) -> tuple[int | None, list[NetworkVotes], dict[str, str]]:
        """The node every network that knows it ranks first, if exactly one is; and the
        networks that know it; else the tops in conflict."""
        tops = {v.name: self._top(v, among) for v in votes}
        valid = []
        for candidate in {t for t in tops.values() if t is not None}:
            knowing = [v for v in votes if not np.isnan(v.scores[:, candidate]).all()]
            if all(tops[v.name] == candidate for v in knowing):
                valid.append((candidate, knowing))
        if len(valid) == 1:
            return valid[0][0], valid[0][1], {}
        return None, [], {name: self.names[t] for name, t in tops.items() if t is not None}

    @staticmethod
    def _share(votes: Sequence[NetworkVotes], among: np.ndarray, node: int) -> float:
        """Mean over networks of the share of windows whose best node in ``among`` is ``node``."""
        shares = []
        for v in votes:
            block = v.scores[:, among]
            known = ~np.isnan(block).all(axis=0)
            if not known.any():
                continue
            winners = among[np.argmax(np.where(np.isnan(block), -np.inf, block), axis=1)]
            shares.append(float(np.mean(winners == node)))
        return _mean(shares)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _disagreement(tops: dict[str, str], what: str) -> str:
    named = " vs ".join(f"{genre} ({network})" for network, genre in tops.items())
    return f"{what}: {named}" if named else what


def _with_reason(decision: Decision, why: str) -> Decision:
    return Decision(decision.genres, decision.level, decision.confidence,
                    f"{decision.reason}; {why}, so the broad genre is written", decision.networks,
                    decision.candidate)
