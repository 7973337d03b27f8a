"""The shipped TFLite models reproduce TensorFlow's outputs and load safely."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DATA

from libtagger.errors import ModelError
from libtagger.analysis.model import Model, model_path, shipped_models, tflite_runtime

SHIPPED = ["msd_musicnn", "msd_vgg", "mtt_musicnn", "mtt_vgg"]
"""The musicnn models; EfficientAT's mn04_as has tests of its own (test_efficientat.py)."""


def test_all_models_ship_with_sidecars():
    assert shipped_models() == ["mn04_as", *SHIPPED]
    for name in SHIPPED:
        sidecar = json.loads(model_path(name).with_suffix(".json").read_text())
        assert len(sidecar["labels"]) == 50
        assert sidecar["frontend"]["patch_frames"] == 187
        assert "ISC" in sidecar["licence"]


@pytest.mark.parametrize("name", SHIPPED)
def test_tflite_reproduces_tensorflow(name):
    golden = np.load(DATA / "golden_audio.npz")
    expected = np.load(DATA / f"golden_{name}.npz")
    probs, embeddings = Model(name).predict(golden["patches"])
    # float16 weights: the export measured differences of a few 1e-4 on probabilities.
    np.testing.assert_allclose(probs, expected["probabilities"], atol=2e-3)
    np.testing.assert_allclose(embeddings, expected["embeddings"], atol=3e-2)
    assert embeddings.shape[1] == (200 if "musicnn" in name else 256)


def test_batch_size_changes_do_not_change_results():
    model = Model("msd_musicnn")
    patches = np.load(DATA / "golden_audio.npz")["patches"]
    both, _ = model.predict(patches)
    one, _ = model.predict(patches[1:])
    again, _ = model.predict(patches)
    np.testing.assert_allclose(one[0], both[1], atol=1e-5)
    np.testing.assert_array_equal(again, both)
    empty, emb = model.predict(patches[:0])
    assert empty.shape == (0, 50) and emb.shape == (0, 200)


def test_runtime_is_chosen_once():
    name, interpreter = tflite_runtime()
    assert name in {"ai-edge-litert", "tflite-runtime"}
    assert tflite_runtime() == (name, interpreter)


def test_unknown_model_name_lists_shipped_ones():
    with pytest.raises(ModelError, match="msd_musicnn"):
        Model("no_such_model")


def test_damaged_model_file_is_refused(tmp_path):
    for suffix in (".tflite", ".json"):
        shutil.copy(model_path("msd_vgg").with_suffix(suffix), tmp_path / f"copy{suffix}")
    data = bytearray((tmp_path / "copy.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "copy.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        Model(str(tmp_path / "copy.tflite"))


def test_model_without_sidecar_is_refused(tmp_path):
    shutil.copy(model_path("msd_vgg"), tmp_path / "lonely.tflite")
    with pytest.raises(ModelError, match="sidecar"):
        Model(str(tmp_path / "lonely.tflite"))


def test_user_model_path_loads(tmp_path):
    for suffix in (".tflite", ".json"):
        shutil.copy(model_path("mtt_vgg").with_suffix(suffix), tmp_path / f"mine{suffix}")
    assert Model(str(tmp_path / "mine.tflite")).name == "mtt_vgg"
