"""Classify one audio file: choose windows, decode them, run the CNNs, vote.

:class:`Classifier` loads the models once and is reused for every file (one per worker
process; ``libtagger.pipeline.batch`` runs many files through isolated workers).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from libtagger.analysis.audio import AudioFile, Window
from libtagger.config import Config
from libtagger.errors import DecodeError, FileError, LibtaggerError, ModelError, display_path
from libtagger.analysis.model import Model
from libtagger.analysis.vote import GenreScore, Vocabulary, vote

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

    @property
    def silent(self) -> bool:
        """True when no window was loud enough to vote."""
        return self.windows > 0 and self.voting_windows == 0

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` output)."""
        out: dict[str, Any] = {
            "path": self.path,
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


class Classifier:
    """The models, the vocabulary and the window policy, loaded once.

    Raises:
        ModelError: a model cannot be loaded or the models disagree on their front-end.
    """

    def __init__(self, config: Config, head: PersonalHead | None = None) -> None:
        self.config = config
        self.head = head if config.personal.mode != "off" else None
        """The user's own genre head (``libtagger learn``), used instead of the vocabulary."""
        settings = config.classifier
        self.models = [Model(name, threads=settings.threads) for name in settings.models]
        frontends = {m.info.frontend for m in self.models}
        if len(frontends) != 1:
            raise ModelError("the configured models expect different audio front-ends")
        self.frontend = frontends.pop()
        self.vocabulary = Vocabulary(dict(config.genres), [m.info.labels for m in self.models])
        if len(self.vocabulary.unmapped()) == len(self.vocabulary.genres):
            raise ModelError("no genre in [genres] matches any tag of the configured models")
        self.name = "+".join(m.name for m in self.models)

    def warm_up(self) -> None:
        """Run one silent window through the front-end and the models.

        The first prediction costs more than a second (TFLite finishes its set-up, the mel
        filterbank is built); a daemon pays it before saying it is ready, not on a user's track.
        """
        patch = self.frontend.log_mel(np.zeros((1, self.frontend.window_samples), np.float32))
        for model in self.models:
            model.predict(patch)

    def window_starts(self, duration: float) -> list[float]:
        """Where the sampled windows start: spread evenly, skipping the track's edges."""
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
        """The windows to classify, the duration, decode errors, and whether it is all of them.

        Raises:
            DecodeError: the file cannot be read as audio.
        """
        settings = self.config.classifier
        with AudioFile(path, self.frontend) as audio:
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
        with AudioFile(path, self.frontend) as audio:
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

    def classify(self, path: str | os.PathLike[str], timeline: bool = False) -> TrackResult:
        """Classify one file.

        Raises:
            DecodeError: the file cannot be read as audio.
        """
        settings = self.config.classifier
        windows, duration, decode_errors, full = self._read_windows(path, timeline)
        if not windows:
            raise DecodeError(path, "no decodable audio")

        probs: list[list[np.ndarray]] = [[] for _ in self.models]
        embeddings: list[list[np.ndarray]] = [[] for _ in self.models]
        for i in range(0, len(windows), settings.batch_size):
            batch = windows[i : i + settings.batch_size]
            patches = self.frontend.log_mel(np.stack([w.samples for w in batch]))
            for m, model in enumerate(self.models):
                p, e = model.predict(patches)
                probs[m].append(p)
                embeddings[m].append(e)
        model_probs = [np.concatenate(p) for p in probs]
        voting = np.array([not w.silent for w in windows])
        scores = self.vocabulary.window_scores(model_probs)
        genres = vote(scores, self.vocabulary.genres, voting, settings.top_k, settings.min_score)
        all_embeddings = np.concatenate([np.concatenate(e) for e in embeddings], axis=1)
        vocabulary, unknown = "default", False
        if self.head is not None:
            mine = self.head.vote(all_embeddings, voting, settings.top_k)
            if mine and mine[0].score >= self.config.personal.min_probability:
                genres, vocabulary = mine, "personal"
            elif self.config.personal.mode == "personal":
                genres, unknown = [], True  # "not one of mine": nothing to write

        tag_means: dict[str, float] = {}
        if voting.any():
            for model, p in zip(self.models, model_probs, strict=True):
                for label, value in zip(model.info.labels, p[voting].mean(axis=0), strict=True):
                    key = label if len(self.models) == 1 else f"{model.name}:{label}"
                    tag_means[key] = round(float(value), 4)
        tag_means = dict(sorted(tag_means.items(), key=lambda kv: -kv[1]))

        timeline_out = None
        if full:
            length = self.frontend.window_seconds
            timeline_out = [
                WindowResult(
                    start=w.start,
                    end=min(w.start + length, duration),
                    silent=bool(w.silent),
                    genres=[] if w.silent else vote(
                        scores[j : j + 1], self.vocabulary.genres, None, settings.top_k,
                        settings.min_score,
                    ),
                )
                for j, w in enumerate(windows)
            ]
        return TrackResult(
            path=os.fspath(path),
            duration=duration,
            model=self.name,
            genres=genres,
            windows=len(windows),
            voting_windows=int(voting.sum()),
            tags=tag_means,
            timeline=timeline_out,
            embeddings=all_embeddings,
            decode_errors=decode_errors,
            vocabulary=vocabulary,
            unknown=unknown,
        )


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
