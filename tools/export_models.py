"""Export musicnn's TF1 checkpoints to TFLite files that ship inside libtagger.

This is a developer tool, run once per model change in a separate virtual environment;
neither TensorFlow nor musicnn is a runtime dependency of libtagger.

    python3.11 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install tensorflow-cpu==2.21.0 librosa
    /tmp/export-venv/bin/pip install --no-deps musicnn==0.1.0
    /tmp/export-venv/bin/python tools/export_models.py            # all four models
    /tmp/export-venv/bin/python tools/export_models.py MSD_musicnn

For each model it writes, into ``libtagger/models/``:

* ``<name>.tflite``: float16 weights, two outputs (tag probabilities, embeddings), a dynamic
  batch dimension;
* ``<name>.json``: the sidecar libtagger reads (labels, front-end parameters, outputs, sha256,
  licence, published ROC-AUC);

and into ``tests/data/``: ``golden_audio.npz`` (a few seconds of synthetic 16 kHz audio and the
log-mel patches librosa computes from it the way musicnn does) and ``golden_<name>.npz``
(TensorFlow's own outputs for those patches). The tests check that libtagger's front-end
reproduces the patches and that the shipped TFLite files reproduce TensorFlow's outputs.

Facts this relies on (checked with TF 2.21): the checkpoints' ``.meta`` only imports after the
``_output_shapes`` attribute is removed from every node; ``model/Placeholder_2:0`` is the
is-training flag and must be fed ``False``; the input is ``model/Placeholder:0`` shaped
[batch, 187, 96]; tag probabilities are ``model/Sigmoid:0`` [batch, 50].
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "libtagger" / "models"
GOLDEN_DIR = ROOT / "tests" / "data"

INPUT = "model/Placeholder:0"
TRAINING_FLAG = "model/Placeholder_2:0"
PROBABILITIES = "model/Sigmoid:0"
EMBEDDINGS = {
    "musicnn": ("model/batch_normalization_10/batchnorm/add_1:0", 200),
    "vgg": ("model/Flatten/flatten/Reshape:0", 256),
}
MODEL_NAMES = ("MSD_musicnn", "MSD_vgg", "MTT_musicnn", "MTT_vgg")
DATASETS = {
    "MTT": "MagnaTagATune (top-50 tags)",
    "MSD": "Million Song Dataset with Last.fm tags (top-50 tags)",
}
N_FRAMES = 187
N_MELS = 96
GOLDEN_PATCHES = 2
# Samples one patch needs with an un-centred STFT: (frames - 1) * hop + n_fft.
WINDOW_SAMPLES = (N_FRAMES - 1) * 256 + 512


def _strip_output_shapes(meta_path: Path):
    """Parse a MetaGraphDef and drop the ``_output_shapes`` attrs TF 2 refuses to import."""
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(meta_path.read_bytes())
    for node in meta.graph_def.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
    return meta


def _golden_audio(seed: int) -> np.ndarray:
    """Six seconds of deterministic 16 kHz music-like audio: a chord, a bass line, noise hits."""
    rng = np.random.default_rng(seed)
    sr = 16000
    t = np.arange(GOLDEN_PATCHES * WINDOW_SAMPLES) / sr
    audio = np.zeros_like(t)
    for f in (220.0, 277.2, 329.6):  # A major triad with a few harmonics
        for h in (1, 2, 3):
            audio += 0.08 / h * np.sin(2 * np.pi * f * h * t)
    audio += 0.2 * np.sin(2 * np.pi * 55.0 * (1 + (t % 2 > 1)) * t)
    beat = (t * 2) % 1.0 < 0.05  # 120 BPM noise bursts
    audio += beat * rng.normal(0, 0.3, size=t.shape)
    return np.clip(audio, -1, 1)


def _reference_patches(audio: np.ndarray) -> np.ndarray:
    """musicnn's front-end with librosa defaults, one un-centred STFT per window of audio."""
    import librosa

    patches = []
    for i in range(GOLDEN_PATCHES):
        chunk = audio[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES].astype(np.float32)
        mel = librosa.feature.melspectrogram(
            y=chunk, sr=16000, n_fft=512, hop_length=256, n_mels=N_MELS, center=False
        ).T
        patches.append(np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1))
    return np.stack(patches).astype(np.float32)


def export(name: str, musicnn_dir: Path) -> dict:
    """Convert one checkpoint to TFLite, write its sidecar and golden fixture; return the sidecar."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    dataset, arch = name.split("_")
    labels = _labels(musicnn_dir, dataset)
    embedding_tensor, embedding_dim = EMBEDDINGS[arch]
    checkpoint_dir = musicnn_dir / name

    graph = tf.Graph()
    with graph.as_default():
        meta = _strip_output_shapes(checkpoint_dir / ".meta")
        saver = tf.compat.v1.train.import_meta_graph(
            meta, input_map={TRAINING_FLAG: tf.constant(False)}, clear_devices=True
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, str(checkpoint_dir) + "/")
            x = graph.get_tensor_by_name(INPUT)
            probs = graph.get_tensor_by_name(PROBABILITIES)
            emb = graph.get_tensor_by_name(embedding_tensor)

            audio = np.round(_golden_audio(seed=7) * 32767).astype(np.int16)
            golden_in = _reference_patches(audio.astype(np.float32) / 32767)
            golden_probs, golden_emb = sess.run([probs, emb], feed_dict={x: golden_in})

            converter = tf.compat.v1.lite.TFLiteConverter.from_session(sess, [x], [probs, emb])
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
            tflite_bytes = converter.convert()

    roc_auc, pr_auc = _published_scores(checkpoint_dir / "experiment.result")
    out_name = name.lower()
    tflite_path = MODELS_DIR / f"{out_name}.tflite"
    tflite_path.write_bytes(tflite_bytes)
    np.savez_compressed(GOLDEN_DIR / "golden_audio.npz", audio_int16=audio, patches=golden_in)
    np.savez_compressed(
        GOLDEN_DIR / f"golden_{out_name}.npz",
        probabilities=golden_probs.astype(np.float32),
        embeddings=golden_emb.astype(np.float32),
    )
    sidecar = {
        "name": out_name,
        "architecture": arch,
        "dataset": DATASETS[dataset],
        "labels": labels,
        "frontend": {
            "sample_rate": 16000,
            "n_fft": 512,
            "hop_length": 256,
            "window": "hann",
            "n_mels": 96,
            "mel_scale": "slaney",
            "power": 2.0,
            "patch_frames": N_FRAMES,
            "log": "log10(10000 * mel + 1), mel rounded to float16 first",
            "short_audio": "repeat-pad",
        },
        "outputs": {"probabilities": len(labels), "embeddings": embedding_dim},
        "weights": "float16",
        "published_roc_auc": roc_auc,
        "published_pr_auc": pr_auc,
        "sha256": hashlib.sha256(tflite_bytes).hexdigest(),
        "source": "musicnn 0.1.0 (PyPI), checkpoint " + name,
        "licence": "ISC, Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019",
    }
    (MODELS_DIR / f"{out_name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def _published_scores(result_file: Path) -> tuple[float, float]:
    """ROC-AUC and PR-AUC on the dataset's test split, as recorded with the checkpoint."""
    values = [
        float(line.split(":", 1)[1])
        for line in result_file.read_text().splitlines()
        if "AUC:" in line
    ]
    return round(values[0], 4), round(values[1], 4)


def _labels(musicnn_dir: Path, dataset: str) -> list[str]:
    """Read the label list from musicnn's own configuration module."""
    sys.path.insert(0, str(musicnn_dir.parent))
    from musicnn import configuration

    return list(getattr(configuration, f"{dataset}_LABELS"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODEL_NAMES))
    args = parser.parse_args()

    import musicnn

    musicnn_dir = Path(musicnn.__file__).parent
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        sidecar = export(name, musicnn_dir)
        size = (MODELS_DIR / f"{sidecar['name']}.tflite").stat().st_size
        print(f"{name}: {size / 1e6:.2f} MB, sha256 {sidecar['sha256'][:12]}")


if __name__ == "__main__":
    main()
