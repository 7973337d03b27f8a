"""EfficientAT mn04_as: the numpy front-end and the TFLite file reproduce PyTorch's numbers.

The golden fixture (tools/export_efficientat.py) holds ten seconds of synthetic 32 kHz audio,
the log-mel patch EfficientAT's own PyTorch front-end computes from it, and the PyTorch
network's probabilities and embedding for that patch.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from libtagger.analysis.efficientat_frontend import EfficientATFrontEnd, kaldi_mel_bank

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "data" / "golden_efficientat.npz"
TFLITE = REPO / "libtagger" / "models" / "mn04_as.tflite"
SIDECAR = TFLITE.with_suffix(".json")
FE = EfficientATFrontEnd()
# Measured: front-end 2.4e-5 (scipy.fft; 1.7e-5 with numpy.fft), TFLite vs PyTorch 3.3e-6.
# Both bounds leave headroom for other FFT/BLAS builds, and are far below the effect of a wrong
# parameter (see below) or of a periodic window (9e-2) or zero padding (1.1) instead.
MEL_ATOL = 1e-4
MODEL_ATOL = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    """The golden fixture's arrays."""
    with np.load(GOLDEN) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def audio(golden) -> np.ndarray:
    """The golden audio as one float32 window [1, 320000]."""
    return (golden["audio_int16"].astype(np.float32) / 32768)[None]


@pytest.fixture(scope="module")
def interpreter() -> Interpreter:
    """The shipped TFLite file, loaded directly with LiteRT on one thread."""
    interp = Interpreter(model_path=str(TFLITE), num_threads=1)
    interp.allocate_tensors()
    return interp


def run(interp: Interpreter, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [n, 527] and embeddings [n, 384] for patches [n, 1, 128, 1000]."""
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, list(mel.shape))
    interp.allocate_tensors()
    interp.set_tensor(index, np.ascontiguousarray(mel, dtype=np.float32))
    interp.invoke()
    outputs = {
        int(d["shape"][-1]): interp.get_tensor(d["index"]).copy()
        for d in interp.get_output_details()
    }
    return outputs[527], outputs[384]


def test_window_geometry():
    assert FE.window_samples == 320_000
    # Pre-emphasis leaves 319,999 samples; a centred STFT with hop 320 gives 1 + 319999 // 320.
    assert FE.frames(FE.window_samples) == 1000
    patch = FE.log_mel(np.zeros((2, FE.window_samples), np.float32))
    assert patch.shape == (2, 1, 128, 1000) and patch.dtype == np.float32


def test_mel_bank_is_kaldis_triangles():
    bank = FE.mel_bank
    assert bank.shape == (128, 513)
    assert not bank[:, -1].any()  # Nyquist bin
    # Filter 0 by hand: mel points every 1127 ln(1 + 15000/700) / 129 mel from 0; FFT bin k
    # sits at 31.25 k Hz.
    step = 1127 * np.log(1 + 15000 / 700) / 129
    for k in range(4):
        m = 1127 * np.log(1 + 31.25 * k / 700)
        assert bank[0, k] == pytest.approx(max(0.0, 1 - abs(m - step) / step), abs=1e-6)
    # Triangles overlap half-way: inside the band, neighbouring filters sum to one.
    inside = slice(1, 468)  # between the first (17 Hz) and last (14.6 kHz) centres
    np.testing.assert_allclose(bank[:, inside].sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        kaldi_mel_bank(128, 1024, 32000, 0.0, 17000.0)


def test_frontend_matches_pytorch(golden, audio):
    ours = FE.log_mel(audio)
    assert ours.shape == golden["mel"].shape
    np.testing.assert_allclose(ours, golden["mel"], rtol=0, atol=MEL_ATOL)


@pytest.mark.parametrize(
    "change", [{"preemphasis": 0.96}, {"fmax": 14900.0}, {"win_length": 801}, {"log_offset": 1e-6}]
)
def test_tolerance_catches_a_wrong_parameter(golden, audio, change):
    wrong = dataclasses.replace(FE, **change).log_mel(audio)
    assert np.abs(wrong - golden["mel"]).max() > 10 * MEL_ATOL


def test_frontend_rejects_one_dimensional_audio(audio):
    with pytest.raises(ValueError):
        FE.log_mel(audio[0])


def test_tflite_matches_pytorch(golden, interpreter):
    probs, embedding = run(interpreter, golden["mel"])
    np.testing.assert_allclose(probs, golden["probabilities"], rtol=0, atol=MODEL_ATOL)
    np.testing.assert_allclose(embedding, golden["embedding"], rtol=0, atol=MODEL_ATOL)


def test_batch_dimension_is_dynamic(golden, interpreter):
    quiet = golden["mel"] * 0.5 - 1.0  # a second, different patch
    batch = np.concatenate([golden["mel"], quiet, golden["mel"]])
    probs, embedding = run(interpreter, batch)
    alone, _ = run(interpreter, quiet)
    assert probs.shape == (3, 527) and embedding.shape == (3, 384)
    np.testing.assert_allclose(probs[[0, 2]], np.repeat(golden["probabilities"], 2, 0), atol=1e-5)
    np.testing.assert_allclose(probs[1], alone[0], atol=1e-5)
    assert np.abs(probs[1] - probs[0]).max() > 0.01


def test_end_to_end_matches_pytorch(golden, audio, interpreter):
    probs, embedding = run(interpreter, FE.log_mel(audio))
    np.testing.assert_allclose(probs, golden["probabilities"], rtol=0, atol=MODEL_ATOL)
    np.testing.assert_allclose(embedding, golden["embedding"], rtol=0, atol=MODEL_ATOL)
    labels = json.loads(SIDECAR.read_text())["labels"]
    assert labels[int(np.argmax(probs[0]))] == "Music"


def test_sidecar_describes_the_file():
    sidecar = json.loads(SIDECAR.read_text())
    assert sidecar["sha256"] == hashlib.sha256(TFLITE.read_bytes()).hexdigest()
    labels = sidecar["labels"]
    assert len(labels) == sidecar["outputs"]["probabilities"] == 527
    assert sidecar["outputs"]["embeddings"] == 384
    assert labels[0] == "Speech" and labels[137] == "Music"
    # AudioSet's genre block.
    assert labels[216] == "Pop music" and labels[219] == "Rock music"
    assert labels[235] == "Jazz" and labels[264] == "Traditional music"
    fe = sidecar["frontend"]
    assert fe["kind"] == "efficientat"
    for field in (
        "sample_rate",
        "n_fft",
        "win_length",
        "hop_length",
        "n_mels",
        "fmin",
        "fmax",
        "preemphasis",
        "log_offset",
        "window_seconds",
    ):
        assert fe[field] == getattr(FE, field), field
    assert fe["patch_frames"] == FE.frames(FE.window_samples)
    assert sidecar["licence"].startswith("MIT")


def test_labels_follow_audioset_csv_order():
    """The label list is the CSV's display names in index order (checked when the CSV is here)."""
    csv_path = REPO.parent / "shared" / "models" / "efficientat" / "class_labels_indices.csv"
    if not csv_path.is_file():
        pytest.skip("the AudioSet label CSV is not beside the repository")
    with open(csv_path, newline="", encoding="utf-8") as f:
        names = [row["display_name"] for row in csv.DictReader(f)]
    assert json.loads(SIDECAR.read_text())["labels"] == names
