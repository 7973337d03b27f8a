"""Measure a classifier on a labelled folder tree: ``DIR/<genre>/<file>``.

Accuracy, per-genre precision/recall/F1 (scikit-learn) and a confusion matrix, written as
JSON and drawn as a PNG (matplotlib). Genre names are compared after
:func:`~libtagger.analysis.vote.normalise_genre`, so a folder named ``hiphop`` matches ``Hip-Hop``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
            "files": self.files,
        }


def evaluate(labelled: list[tuple[str, str]], results: list[TrackResult | Failure]) -> Evaluation:
    """Score classification results against their folder labels."""
    items: list[tuple[str, str, list[str]]] = []
    failures: list[Failure] = []
    model = ""
    for (path, label), result in zip(labelled, results, strict=True):
        if isinstance(result, Failure):
            failures.append(result)
            continue
        model = result.model
        items.append((path, label, [g.genre for g in result.genres]))
    return score_predictions(model, items, failures)


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


def write_reports(evaluation: Evaluation, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``evaluation.json`` and ``confusion.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "evaluation.json"
    json_path.write_text(json.dumps(evaluation.to_dict(), indent=2) + "\n", encoding="utf-8")
    png_path = out / "confusion.png"
    plot_confusion(evaluation, png_path)
    return json_path, png_path


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
