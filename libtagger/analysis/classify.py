"""Classify one audio file: choose windows, decode them, run the CNNs, vote.

:class:`Classifier` loads the models once and is reused for every file (one per worker
process; ``libtagger.pipeline.batch`` runs many files through isolated workers).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from libtagger.analysis.audio import SILENCE_DBFS, AudioFile, Window
from libtagger.config import Config
from libtagger.errors import DecodeError, FileError, LibtaggerError, ModelError, display_path
from libtagger.errors import path_fields
from libtagger.analysis.model import Model, networks
from libtagger.analysis.tree import Decision, GenreTree, NetworkVotes
from libtagger.analysis.vote import GenreScore

if TYPE_CHECKING:
    from libtagger.analysis.head import PersonalHead

log = logging.getLogger(__name__)

# Tracks shorter than this many windows' worth of audio are decoded whole: seeking would
# save little and the windows would overlap.
FULL_DECODE_FACTOR = 2.0


@dataclass(frozen=True)
class WindowResult:
    """One window of the timeline: where it is and what it sounded like."""

    start: float
    end: float
    silent: bool
    genres: list[GenreScore]


@dataclass(frozen=True)
class TrackResult:
    """Everything classification learned about one file."""

    path: str
    duration: float | None
    model: str
    genres: list[GenreScore]
    windows: int
    """Windows classified (silent ones included)."""
    voting_windows: int
    """Windows that were loud enough to vote."""
    tags: dict[str, float]
    """Mean probability of every model tag over voting windows, best first."""
    timeline: list[WindowResult] | None = None
    embeddings: np.ndarray | None = field(default=None, repr=False, compare=False)
    """Per-window CNN embeddings [windows, dims], the models' concatenated."""
    decode_errors: int = 0
    vocabulary: str = "default"
    """default (the tag vocabulary) or personal (your own head, ``libtagger learn``)."""
    unknown: bool = False
    """Your head was not sure enough: none of your genres fits (nothing is written)."""
    decision: Decision | None = None
    """What the genre tree decided should be written, and why (see ``analysis.tree``)."""

    @property
    def silent(self) -> bool:
        """True when no window was loud enough to vote."""
        return self.windows > 0 and self.voting_windows == 0

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` output)."""
        out: dict[str, Any] = {
            **path_fields(self.path),
            "genres": [_genre_dict(g) for g in self.genres],
            "duration": None if self.duration is None else round(self.duration, 3),
            "windows": self.windows,
            "voting_windows": self.voting_windows,
            "model": self.model,
        }
        if self.silent:
            out["silent"] = True
        if self.vocabulary != "default" or self.unknown:
            out["vocabulary"] = self.vocabulary
            out["unknown"] = self.unknown
        if self.decode_errors:
            out["decode_errors"] = self.decode_errors
        if self.decision is not None:
            out["decision"] = self.decision.to_dict()
        if timeline and self.timeline is not None:
            out["timeline"] = [
                {
                    "start": round(w.start, 3),
                    "end": round(w.end, 3),
                    "silent": w.silent,
                    "genre": w.genres[0].genre if w.genres else None,
                    "score": w.genres[0].score if w.genres else None,
                    "genres": [{"genre": g.genre, "score": g.score} for g in w.genres],
                }
                for w in self.timeline
            ]
        return out


def _genre_dict(g: GenreScore) -> dict[str, Any]:
    return {"genre": g.genre, "score": g.score, "confidence": g.confidence}


@dataclass
class Network:
    """Models that share a front-end: their scores are averaged; a network votes as one."""

    name: str
    models: list[Model]
    frontend: Any

    def windows_of(self, stretches: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """This network's windows cut from decoded stretches [n, samples] at ``rate``.

        Returns (windows [n * k, window_samples], stretch index of each window). A network
        whose windows are shorter than the stretch takes ``k`` evenly spaced ones from each,
        resampled to its own rate: one decode serves every network.
        """
        fe = self.frontend
        if fe.sample_rate != rate:
            from scipy.signal import resample_poly

            g = math.gcd(fe.sample_rate, rate)
            stretches = resample_poly(stretches, fe.sample_rate // g, rate // g,
                                      axis=1).astype(np.float32)
        length = stretches.shape[1]
        if length <= fe.window_samples:
            if length < fe.window_samples:
                stretches = np.stack([_repeat_pad(s, fe.window_samples) for s in stretches])
            return stretches, np.arange(len(stretches))
        k = max(1, min(SHORT_WINDOWS_PER_STRETCH,
                       (length - fe.window_samples) // fe.window_stride + 1))
        starts = np.linspace(0, length - fe.window_samples, k).round().astype(int)
        windows = np.stack([s[o : o + fe.window_samples] for s in stretches for o in starts])
        return windows, np.repeat(np.arange(len(stretches)), k)


class Classifier:
    """The networks, the genre tree and the window policy, loaded once.

    Raises:
        ModelError: a model cannot be loaded, or no genre maps to any model tag.
    """

    def __init__(self, config: Config, head: PersonalHead | None = None) -> None:
        self.config = config
        self.head = head if config.personal.mode != "off" else None
        """The user's own genre head (``libtagger learn``), used instead of the tree."""
        settings = config.classifier
        self.models = [Model(name, threads=settings.threads) for name in settings.models]
        self.networks = [Network(_network_name(group), group, group[0].info.frontend)
                         for group in networks(self.models)]
        # Stretches are decoded at the longest window any network needs, at the highest rate.
        self.frontend = max((n.frontend for n in self.networks),
                            key=lambda fe: (fe.window_samples / fe.sample_rate, fe.sample_rate))
        self.tree = GenreTree(config.genres,
                              [[m.info.labels for m in n.models] for n in self.networks])
        if len(self.tree.unmapped()) == len(self.tree.names):
            raise ModelError("no genre in [genres] matches any tag of the configured models")
        self.name = "+".join(m.name for m in self.models)

    def warm_up(self) -> None:
        """Run one silent stretch through every front-end and model.

        The first prediction costs more (TFLite finishes its set-up, the mel filterbank is
        built); a daemon pays it before saying it is ready, not on a user's track.
        """
        stretch = np.zeros((1, self.frontend.window_samples), np.float32)
        for network in self.networks:
            windows, _ = network.windows_of(stretch, self.frontend.sample_rate)
            patch = network.frontend.log_mel(windows[:1])
            for model in network.models:
                model.predict(patch)

    def window_starts(self, duration: float) -> list[float]:
        """Where the sampled stretches start: spread evenly, skipping the track's edges."""
        settings = self.config.classifier
        length = self.frontend.window_seconds
        first = duration * settings.edge_skip
        last = duration * (1.0 - settings.edge_skip) - length
        if settings.windows == 1 or last <= first:
            return [max(0.0, (duration - length) / 2)]
        return [float(t) for t in np.linspace(first, last, settings.windows)]

    def _read_windows(
        self, path: str | os.PathLike[str], timeline: bool
    ) -> tuple[list[Window], float | None, int, bool]:
        """The stretches to classify, the duration, decode errors, and whether it is all of them.

        Raises:
            DecodeError: the file cannot be read as audio.
        """
        settings = self.config.classifier
        with AudioFile(path, self.frontend, limits=self.config.limits) as audio:
            duration = audio.info.duration
            needed = settings.windows * self.frontend.window_seconds * FULL_DECODE_FACTOR
            full = timeline or (duration or 0.0) >= settings.timeline_min_duration
            if not full and duration is not None and duration >= needed:
                starts = self.window_starts(duration)
                windows = audio.read_windows_at(starts)
                if len(windows) == len(starts):
                    return windows, duration, audio.decode_errors, False
        # Short audio, unknown duration, a timeline, or seeking failed (a truncated file or a
        # broken index): read the whole file from the start.
        with AudioFile(path, self.frontend, limits=self.config.limits) as audio:
            windows = list(audio.iter_windows())
            errors = audio.decode_errors
            header = duration
            duration = audio.decoded_seconds  # read to the end: the true length
        if header is not None and is_truncated(header, duration):
            raise DecodeError(path, f"truncated (header {_clock(header)}, audio "
                                    f"{_clock(duration)})")
        if not full:
            windows = _spread(windows, settings.windows, settings.edge_skip)
        return windows, duration, errors, full

    def _run(self, network: Network, windows: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Each model's probabilities [n, labels] and the network's embeddings [n, dims]."""
        size = self.config.classifier.batch_size
        probs: list[list[np.ndarray]] = [[] for _ in network.models]
        embeddings: list[list[np.ndarray]] = [[] for _ in network.models]
        for i in range(0, len(windows), size):
            patches = network.frontend.log_mel(windows[i : i + size])
            for m, model in enumerate(network.models):
                p, e = model.predict(patches)
                probs[m].append(p)
                embeddings[m].append(e)
        return ([np.concatenate(p) for p in probs],
                np.concatenate([np.concatenate(e) for e in embeddings], axis=1))

    def classify(self, path: str | os.PathLike[str], timeline: bool = False) -> TrackResult:
        """Classify one file.

        Raises:
            DecodeError: the file cannot be read as audio.
        """
        settings = self.config.classifier
        stretches, duration, decode_errors, full = self._read_windows(path, timeline)
        if not stretches:
            raise DecodeError(path, "no decodable audio")
        audio = np.stack([w.samples for w in stretches])
        voting_stretch = np.array([not w.silent for w in stretches])

        votes: list[NetworkVotes] = []
        per_stretch: list[tuple[np.ndarray, np.ndarray]] = []  # (scores, stretch of each window)
        stretch_embeddings: list[np.ndarray] = []
        tag_means: dict[str, float] = {}
        for n, network in enumerate(self.networks):
            windows, owner = network.windows_of(audio, self.frontend.sample_rate)
            model_probs, embeddings = self._run(network, windows)
            voting = np.array([_loud(w) for w in windows]) & voting_stretch[owner]
            scores = self.tree.window_scores(n, model_probs)
            votes.append(NetworkVotes(network.name, scores[voting]))
            per_stretch.append((np.where(voting[:, None], scores, np.nan), owner))
            stretch_embeddings.append(np.stack([embeddings[owner == s].mean(axis=0)
                                                for s in range(len(stretches))]))
            for model, p in zip(network.models, model_probs, strict=True):
                if voting.any():
                    for label, value in zip(model.info.labels, p[voting].mean(axis=0),
                                            strict=True):
                        key = label if len(self.models) == 1 else f"{model.name}:{label}"
                        tag_means[key] = round(float(value), 4)
        tag_means = dict(sorted(tag_means.items(), key=lambda kv: -kv[1])[:TAGS_KEPT])
        all_embeddings = np.concatenate(stretch_embeddings, axis=1)

        decision = self.tree.decide(votes, self.config.tags)
        genres = self.tree.ranked(votes, settings.top_k, settings.min_score, decision.genres)
        vocabulary, unknown = "default", False
        if self.head is not None:
            mine = self.head.vote(all_embeddings, voting_stretch, settings.top_k)
            if mine and mine[0].score >= self.config.personal.min_probability:
                genres, vocabulary = mine, "personal"
                decision = Decision((mine[0].genre,), "personal", mine[0].confidence,
                                    f"your genre {mine[0].genre}: the head gives it "
                                    f"{mine[0].score:.0%}")
            elif self.config.personal.mode == "personal":
                genres, unknown = [], True  # "not one of mine": nothing to write
                decision = Decision(reason="none of your genres fits (personal head unsure)")

        timeline_out = None
        if full:
            length = self.frontend.window_seconds
            timeline_out = []
            for s, w in enumerate(stretches):
                here = [NetworkVotes(net.name, scores[owner == s][~np.isnan(scores[owner == s])
                                                                   .all(axis=1)])
                        for net, (scores, owner) in zip(self.networks, per_stretch, strict=True)]
                timeline_out.append(WindowResult(
                    start=w.start, end=min(w.start + length, duration), silent=bool(w.silent),
                    genres=[] if w.silent else self.tree.ranked(here, settings.top_k,
                                                                settings.min_score),
                ))
        return TrackResult(
            path=os.fspath(path),
            duration=duration,
            model=self.name,
            genres=genres,
            windows=len(stretches),
            voting_windows=int(voting_stretch.sum()),
            tags=tag_means,
            timeline=timeline_out,
            embeddings=all_embeddings,
            decode_errors=decode_errors,
            vocabulary=vocabulary,
            unknown=unknown,
            decision=decision,
        )


# musicnn's 3-s windows taken from each 10-s stretch: two (8 per track at the default 4
# stretches, as many as musicnn alone used) cost 0.2 s of CPU per track; a third adds 0.1 s.
SHORT_WINDOWS_PER_STRETCH = 2

# The most probable model tags kept with a result (AudioSet alone has 527).
TAGS_KEPT = 60


def _network_name(models: list[Model]) -> str:
    """musicnn or efficientat, by front-end; the model names when it is neither."""
    kind = type(models[0].info.frontend).__name__
    return {"FrontEnd": "musicnn", "EfficientATFrontEnd": "efficientat"}.get(
        kind, "+".join(m.name for m in models))


def _loud(samples: np.ndarray) -> bool:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-10)) >= SILENCE_DBFS


def _repeat_pad(samples: np.ndarray, length: int) -> np.ndarray:
    reps = -(-length // max(1, len(samples)))
    return np.tile(samples, reps)[:length]


# A file whose audio ends well before its header says is cut off (an interrupted copy or
# download): genres of its first part are not the track's, so it is not classified.
TRUNCATED_SHARE = 0.75
TRUNCATED_SECONDS = 5.0


def is_truncated(header_seconds: float, decoded_seconds: float) -> bool:
    """Whether decoding ended far short of the duration the container header states.

    VBR files without a seek table carry an estimated duration, off by a few per cent; a cut
    file is short by a large share, so both a share and an absolute margin must be missed.
    """
    missing = header_seconds - decoded_seconds
    return decoded_seconds < TRUNCATED_SHARE * header_seconds and missing > TRUNCATED_SECONDS


def _clock(seconds: float) -> str:
    """1:05 or 1:02:03."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _spread(windows: list[Window], count: int, edge_skip: float) -> list[Window]:
    """Pick ``count`` windows evenly from the middle of a fully decoded short track."""
    if len(windows) <= count:
        return windows
    lo = int(len(windows) * edge_skip)
    hi = max(lo, int(np.ceil(len(windows) * (1.0 - edge_skip))) - 1)
    picks = sorted(set(np.round(np.linspace(lo, hi, count)).astype(int).tolist()))
    return [windows[i] for i in picks]


@dataclass(frozen=True)
class Failure:
    """A file that could not be classified, and why."""

    path: str
    reason: str


def single_threaded_numerics() -> None:
    """Keep BLAS (numpy's matrix products) to one thread in this process.

    Workers already use one core each; a multi-threaded BLAS on these small products only
    spins: measured here, it doubled the CPU time per track for no gain in wall time.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def classify_or_fail(classifier: Classifier, path: str, timeline: bool = False) -> TrackResult | Failure:
    """The forgiving wrapper: a :class:`Failure` instead of an exception for a bad file."""
    try:
        return classifier.classify(path, timeline=timeline)
    except FileError as exc:
        return Failure(os.fspath(path), exc.reason)
    except LibtaggerError as exc:
        return Failure(os.fspath(path), str(exc))
    except MemoryError:
        return Failure(os.fspath(path), "out of memory while decoding")
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop a 40,000-track run
        log.debug("unexpected error on %s", display_path(path), exc_info=True)
        return Failure(os.fspath(path), f"unexpected error ({type(exc).__name__}: {exc})")


def classify_file(
    path: str | os.PathLike[str], config: Config | None = None, timeline: bool = False
) -> TrackResult:
    """Classify one file with the shipped models (or ``config``'s).

    Raises:
        DecodeError: the file cannot be read as audio.
        ModelError: the models cannot be loaded.
    """
    return Classifier(config or Config()).classify(path, timeline=timeline)
