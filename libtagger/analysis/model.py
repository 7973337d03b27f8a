"""Load a shipped (or user-supplied) TFLite tagging model with its sidecar, and run it.

The TFLite runtime is chosen once: ``ai-edge-litert`` when installed, else ``tflite-runtime``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from libtagger.analysis.audio import FrontEnd
from libtagger.analysis.efficientat_frontend import EfficientATFrontEnd
from libtagger.errors import ModelError

MODELS_PACKAGE = "libtagger.models"


@cache
def tflite_runtime() -> tuple[str, Any]:
    """The name and ``Interpreter`` class of the TFLite runtime, looked up once.

    Raises:
        ModelError: neither ai-edge-litert nor tflite-runtime is installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        return "ai-edge-litert", Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return "tflite-runtime", Interpreter
    except ImportError:
        raise ModelError(
            "no TFLite runtime is installed: pip install ai-edge-litert"
        ) from None


@dataclass(frozen=True)
class ModelInfo:
    """A model's sidecar: what it outputs and the front-end it expects."""

    name: str
    labels: tuple[str, ...]
    frontend: FrontEnd | EfficientATFrontEnd
    embedding_dim: int
    sha256: str
    licence: str
    dataset: str
    published_roc_auc: float | None
    published_map: float | None = None

    @property
    def accuracy(self) -> str:
        """The published figure, as its paper states it."""
        if self.published_map is not None:
            return f"mAP {self.published_map}"
        return f"ROC-AUC {self.published_roc_auc}"

    @classmethod
    def from_sidecar(cls, data: dict[str, Any], source: str) -> ModelInfo:
        """Build from the parsed sidecar JSON.

        Raises:
            ModelError: a required field is missing or malformed.
        """
        try:
            fe = data["frontend"]
            return cls(
                name=str(data["name"]),
                labels=tuple(str(label) for label in data["labels"]),
                frontend=_frontend(fe),
                embedding_dim=int(data["outputs"]["embeddings"]),
                sha256=str(data["sha256"]),
                licence=str(data.get("licence", "unknown")),
                dataset=str(data.get("dataset", "")),
                published_roc_auc=data.get("published_roc_auc"),
                published_map=data.get("published_map"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed model sidecar ({exc!r})") from exc


def _frontend(fe: dict[str, Any]) -> FrontEnd | EfficientATFrontEnd:
    """The front-end a sidecar describes: musicnn's log-mel, or EfficientAT's (``kind``)."""
    if fe.get("kind") == "efficientat":
        return EfficientATFrontEnd(
            sample_rate=int(fe["sample_rate"]), n_fft=int(fe["n_fft"]),
            win_length=int(fe["win_length"]), hop_length=int(fe["hop_length"]),
            n_mels=int(fe["n_mels"]), fmin=float(fe["fmin"]), fmax=float(fe["fmax"]),
            preemphasis=float(fe["preemphasis"]), log_offset=float(fe["log_offset"]),
            window_seconds=float(fe["window_seconds"]),
        )
    return FrontEnd(
        sample_rate=int(fe["sample_rate"]), n_fft=int(fe["n_fft"]),
        hop_length=int(fe["hop_length"]), n_mels=int(fe["n_mels"]),
        patch_frames=int(fe["patch_frames"]),
    )


def shipped_models() -> list[str]:
    """Names of the models that ship inside the package."""
    folder = resources.files(MODELS_PACKAGE)
    return sorted(p.name[: -len(".tflite")] for p in folder.iterdir() if p.name.endswith(".tflite"))


def model_path(name_or_path: str) -> Path:
    """Resolve a shipped model name (``msd_musicnn``) or a path to a ``.tflite`` file.

    Raises:
        ModelError: no such shipped model and no such file.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".tflite":
        if not candidate.is_file():
            raise ModelError(f"model file not found: {candidate}")
        return candidate
    shipped = resources.files(MODELS_PACKAGE) / f"{name_or_path}.tflite"
    if not shipped.is_file():
        known = ", ".join(shipped_models())
        raise ModelError(f"unknown model {name_or_path!r}; shipped models: {known}")
    return Path(str(shipped))


def read_sidecar(path: Path) -> ModelInfo:
    """The sidecar next to a ``.tflite`` file.

    Raises:
        ModelError: it is missing or malformed.
    """
    sidecar = path.with_suffix(".json")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: sidecar {sidecar.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{sidecar}: unreadable sidecar ({exc})") from exc
    return ModelInfo.from_sidecar(data, str(sidecar))


def check_models(config: Any) -> str:
    """Check the configured models without loading them (in the main process, before any
    worker starts): files, sidecars, checksums, a runtime, one front-end. Returns the model
    set's name.

    Raises:
        ModelError: a model is unusable.
    """
    names = list(config.classifier.models)
    infos = []
    for name in names:
        path = model_path(name)
        info = read_sidecar(path)
        if hashlib.sha256(path.read_bytes()).hexdigest() != info.sha256:
            raise ModelError(f"{path}: checksum does not match its sidecar (damaged file?)")
        infos.append(info)
    tflite_runtime()
    from libtagger.analysis.tree import GenreTree

    tree = GenreTree(config.genres, [[i.labels for i in group] for group in networks(infos)])
    if len(tree.unmapped()) == len(tree.names):
        raise ModelError("no genre in [genres] matches any tag of the configured models")
    return "+".join(i.name for i in infos)


def networks(infos: list[Any]) -> list[list[Any]]:
    """Models (or their infos) grouped into networks: those sharing a front-end, in order."""
    groups: dict[Any, list[Any]] = {}
    for item in infos:
        frontend = item.frontend if hasattr(item, "frontend") else item.info.frontend
        groups.setdefault(frontend, []).append(item)
    return list(groups.values())


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while the runtime loads: it prints an INFO line from C++."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Model:
    """One TFLite tagging model: ``predict(patches)`` → (tag probabilities, embeddings).

    Raises:
        ModelError: the file, its sidecar or its checksum is wrong, or the runtime refuses it.
    """

    def __init__(self, name_or_path: str, threads: int = 1) -> None:
        path = model_path(name_or_path)
        self.info = read_sidecar(path)
        content = path.read_bytes()
        if hashlib.sha256(content).hexdigest() != self.info.sha256:
            raise ModelError(f"{path}: checksum does not match its sidecar (damaged file?)")
        self.runtime, interpreter_class = tflite_runtime()
        try:
            with _quiet_stderr():
                self._interpreter = interpreter_class(model_content=content, num_threads=threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: the TFLite runtime cannot load it ({exc})") from exc
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        # The probabilities are the output with one column per label; the other is embeddings.
        by_width = {int(d["shape_signature"][-1]): d["index"] for d in outputs}
        n_labels = len(self.info.labels)
        if n_labels not in by_width or len(outputs) != 2:
            raise ModelError(f"{path}: expected outputs [batch, {n_labels}] and embeddings")
        self._probs = by_width[n_labels]
        self._embeddings = next(d["index"] for d in outputs if d["index"] != self._probs)
        self._batch = 0

    @property
    def name(self) -> str:
        """The model's name, as recorded with every result."""
        return self.info.name

    def predict(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tag probabilities [n, labels] and embeddings [n, dim] for patches [n, frames, mels]."""
        patches = np.ascontiguousarray(patches, dtype=np.float32)
        n = patches.shape[0]
        if n == 0:
            return (
                np.zeros((0, len(self.info.labels)), np.float32),
                np.zeros((0, self.info.embedding_dim), np.float32),
            )
        if n != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(patches.shape))
            self._interpreter.allocate_tensors()
            self._batch = n
        self._interpreter.set_tensor(self._input, patches)
        self._interpreter.invoke()
        probs = self._interpreter.get_tensor(self._probs).copy()
        embeddings = self._interpreter.get_tensor(self._embeddings).reshape(n, -1).copy()
        return probs, embeddings
