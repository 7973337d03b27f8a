"""Measure a classifier on a labelled folder tree: ``DIR/<genre>/<file>``.

Accuracy, per-genre precision/recall/F1 (scikit-learn) and a confusion matrix, written as
JSON and drawn as a PNG (matplotlib). Genre names are compared after
:func:`~libtagger.analysis.vote.normalise_genre`, so a folder named ``hiphop`` matches ``Hip-Hop``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from libtagger.analysis.audio import find_audio
from libtagger.analysis.classify import Failure, TrackResult
from libtagger.analysis.vote import normalise_genre

def labelled_files(root: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(path, genre folder name) for every audio file in ``root/<genre>/…``."""
    root = Path(root)
    out = []
    for path in find_audio(root):
        relative = Path(path).relative_to(root)
        if len(relative.parts) >= 2:
            out.append((path, relative.parts[0]))
    return out


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one evaluation run."""

    model: str
    files: list[dict[str, Any]]
    failures: list[Failure]
    labels: list[str]
    confusion: list[list[int]]
    accuracy: float
    top3_accuracy: float
    per_genre: dict[str, dict[str, float]]
    written: dict[str, Any] = field(default_factory=dict)
    """What would land in the files at the configured gates: coverage and precision, and the
    precision-vs-coverage curve over the vote-share gate."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole evaluation."""
        return {
            "model": self.model,
            "tracks": len(self.files),
            "failed": [{"path": f.path, "reason": f.reason} for f in self.failures],
            "accuracy": self.accuracy,
            "top3_accuracy": self.top3_accuracy,
            "per_genre": self.per_genre,
            "confusion_matrix": {"labels": self.labels, "matrix": self.confusion},
            "written": self.written,
            "files": self.files,
        }


def evaluate(labelled: list[tuple[str, str]], results: list[TrackResult | Failure],
             parents: dict[str, str | None] | None = None) -> Evaluation:
    """Score classification results against their folder labels.

    ``parents`` (the genre tree: node -> broad genre) makes a written broad genre right for a
    folder that names one of its styles, and a style right for its broad genre's folder.
    """
    items: list[tuple[str, str, list[str]]] = []
    failures: list[Failure] = []
    model = ""
    for (path, label), result in zip(labelled, results, strict=True):
        if isinstance(result, Failure):
            failures.append(result)
            continue
        model = result.model
        items.append((path, label, [g.genre for g in result.genres]))
    scored = score_predictions(model, items, failures)
    return dataclasses.replace(scored, written=written_metrics(labelled, results, parents or {}))


# Vote-share gates the precision-vs-coverage curve is drawn at.
CURVE_GATES = tuple(round(g, 2) for g in np.linspace(0.0, 1.0, 21))


def written_metrics(labelled: list[tuple[str, str]], results: list[TrackResult | Failure],
                    parents: dict[str, str | None]) -> dict[str, Any]:
    """Coverage and precision of what the configured gates write, and the curve over gates."""
    def right(genre: str, label: str) -> bool:
        truth, name = normalise_genre(label), normalise_genre(genre)
        parent = parents.get(genre)
        children = {normalise_genre(n) for n, p in parents.items() if p == genre}
        return name == truth or (parent is not None and normalise_genre(parent) == truth) \
            or truth in children

    n = len(labelled)
    decided = [(label, r.decision) for (_, label), r in zip(labelled, results, strict=True)
               if isinstance(r, TrackResult) and r.decision is not None]
    written = [(label, d.genres[0]) for label, d in decided if d.genres]
    correct = sum(right(genre, label) for label, genre in written)
    curve = []
    for gate in CURVE_GATES:
        chosen = [(label, d.candidate) for label, d in decided
                  if d.candidate is not None and d.confidence >= gate]
        good = sum(right(genre, label) for label, genre in chosen)
        curve.append({"gate": gate, "coverage": round(len(chosen) / n, 4) if n else 0.0,
                      "precision": round(good / len(chosen), 4) if chosen else None})
    return {"tracks": n, "written": len(written), "right": correct,
            "coverage": round(len(written) / n, 4) if n else 0.0,
            "precision": round(correct / len(written), 4) if written else None,
            "curve": curve}


def score_predictions(
    model: str,
    items: list[tuple[str, str, list[str]]],
    failures: list[Failure] | None = None,
    key: Callable[[str], str] = normalise_genre,
) -> Evaluation:
    """Score (path, true label, ranked predicted genres) items; ``key`` says which names match."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    truth: list[str] = []
    predicted: list[str] = []
    files: list[dict[str, Any]] = []
    top3 = 0
    # Show genres by their true labels where there is one, else as the model names them.
    display: dict[str, str] = {}
    for _, label, _ in items:
        display.setdefault(key(label), label)
    for path, label, ranked in items:
        truth_key = key(label)
        best = key(ranked[0]) if ranked else "none"
        display.setdefault(best, ranked[0] if ranked else "(none)")
        truth.append(truth_key)
        predicted.append(best)
        top3 += truth_key in {key(g) for g in ranked[:3]}
        files.append(
            {"path": path, "label": label, "predicted": ranked[:3],
             "correct": best == truth_key}
        )
    keys = sorted(set(truth) | set(predicted), key=lambda k: (k not in set(truth), k))
    labels = [display[k] for k in keys]
    n = len(truth)
    if n:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a one-genre set is still fine
            matrix = confusion_matrix(truth, predicted, labels=keys).tolist()
            precision, recall, f1, support = precision_recall_fscore_support(
                truth, predicted, labels=keys, zero_division=0
            )
    else:
        matrix = []
        precision = recall = f1 = support = np.zeros(len(keys))
    per_genre = {
        labels[i]: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, k in enumerate(keys)
        if k in set(truth)
    }
    accuracy = sum(t == p for t, p in zip(truth, predicted, strict=True)) / n if n else 0.0
    return Evaluation(
        model=model,
        files=files,
        failures=failures or [],
        labels=labels,
        confusion=matrix,
        accuracy=round(accuracy, 4),
        top3_accuracy=round(top3 / n, 4) if n else 0.0,
        per_genre=per_genre,
    )


def write_reports(evaluation: Evaluation, out_dir: str | os.PathLike[str]) -> tuple[Path, ...]:
    """Write ``evaluation.json``, ``confusion.png`` and (when there are decisions)
    ``precision_coverage.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "evaluation.json"
    json_path.write_text(json.dumps(evaluation.to_dict(), indent=2) + "\n", encoding="utf-8")
    png_path = out / "confusion.png"
    plot_confusion(evaluation, png_path)
    if not evaluation.written.get("curve"):
        return json_path, png_path
    curve_path = out / "precision_coverage.png"
    plot_curve(evaluation, curve_path)
    return json_path, png_path, curve_path


def plot_curve(evaluation: Evaluation, path: Path) -> None:
    """Precision against coverage as the vote-share gate moves, the configured point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [c for c in evaluation.written["curve"] if c["precision"] is not None]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([c["coverage"] for c in points], [c["precision"] for c in points], marker="o")
    for c in points[::4]:
        ax.annotate(f"{c['gate']:.2f}", (c["coverage"], c["precision"]), fontsize=7)
    w = evaluation.written
    if w.get("precision") is not None:
        ax.plot([w["coverage"]], [w["precision"]], marker="*", markersize=14, color="red",
                label="configured gates")
        ax.legend(loc="lower left")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of tracks written)")
    ax.set_ylabel("precision (written genres right)")
    ax.set_title(f"{evaluation.model}: precision vs coverage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(evaluation: Evaluation, path: Path) -> None:
    """Draw the confusion matrix (rows: true genre, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = evaluation.labels
    matrix = np.array(evaluation.confusion, dtype=int).reshape(len(labels), len(labels))
    size = max(4.0, 0.55 * len(labels) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (folder)")
    ax.set_title(
        f"{evaluation.model}: accuracy {evaluation.accuracy:.0%} "
        f"(top-3 {evaluation.top3_accuracy:.0%}), {len(evaluation.files)} tracks"
    )
    peak = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            colour = "white" if value > peak / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
