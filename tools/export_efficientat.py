"""Export EfficientAT's ``mn04_as`` AudioSet tagger to a TFLite file that ships inside libtagger.

A developer tool, run once per model change in a separate virtual environment; neither PyTorch
nor EfficientAT's code is a runtime dependency of libtagger.

    python3.11 -m venv /work/devvenv-torch
    /work/devvenv-torch/bin/pip install torch==2.13.0          # the CPU build on local disk
    /work/devvenv-torch/bin/pip install -c <(echo torch==2.13.0) \\
        litert-torch==0.10.0 ai-edge-litert numpy librosa
    /work/devvenv-torch/bin/pip download --no-deps -d /tmp/ta torchaudio==2.11.0
    /work/devvenv-torch/bin/python tools/export_efficientat.py \\
        --torchaudio-wheel /tmp/ta/torchaudio-2.11.0-*.whl

Inputs (``--source``, default ``../shared/models/efficientat``): the state dict
``mn04_as_mAP_432.pt``, EfficientAT's model code in ``code/`` (imported from there through
``sys.path``, never copied), ``class_labels_indices.csv`` and ``LICENSE``.

It writes ``libtagger/models/mn04_as.tflite`` (float32, input log-mel [batch, 1, 128, 1000],
outputs sigmoid probabilities [batch, 527] and the pooled embedding [batch, 384]),
``libtagger/models/mn04_as.json`` (the sidecar) and ``tests/data/golden_efficientat.npz``.

The golden front-end is EfficientAT's own ``AugmentMelSTFT`` module in eval mode, run by
PyTorch: its pre-emphasis, ``torch.stft`` and log/normalisation are upstream's code as is. Its
mel filterbank comes from ``torchaudio.compliance.kaldi.get_mel_banks``; torchaudio cannot be
installed beside this torch (its C++ extension is built for another release), so the tool
loads that pure-Python module, unchanged, straight out of the torchaudio wheel given with
``--torchaudio-wheel``, behind an empty ``torchaudio`` package. It then checks that filterbank
against libtagger's own numpy port and against the mel formula at each filter's peak.

The TFLite file must match PyTorch within 1e-4 on the golden window, at batch 1 and 3 (the
batch dimension is dynamic). ``--float16`` halves the file (2.1 MB) but misses that bound
(max difference 5e-3 in probabilities, 8e-3 in the embedding, measured with litert-torch's
fp16 recipe), so the shipped file is float32.

Two stand-ins make the upstream code import here, both written below, not copied: the model
needs only ``torchvision.ops.misc.ConvNormActivation`` (torchvision's wheels do not import
beside this torch), and ``helpers/utils.py`` reads ``metadata/class_labels_indices.csv`` and the
model loader looks for ``resources/mn04_as_mAP_432.pt`` relative to the working directory, so
both are linked into a temporary working directory.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _load_frontend_module() -> types.ModuleType:
    """libtagger's front-end module by path: the package's own imports need runtime deps."""
    path = ROOT / "libtagger" / "analysis" / "efficientat_frontend.py"
    spec = importlib.util.spec_from_file_location("efficientat_frontend", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_frontend = _load_frontend_module()
EfficientATFrontEnd, kaldi_mel = _frontend.EfficientATFrontEnd, _frontend.kaldi_mel

MODELS_DIR = ROOT / "libtagger" / "models"
GOLDEN = ROOT / "tests" / "data" / "golden_efficientat.npz"
DEFAULT_SOURCE = ROOT.parent / "shared" / "models" / "efficientat"
WEIGHTS = "mn04_as_mAP_432.pt"
WEIGHTS_SHA256 = "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"
NAME = "mn04_as"
FRONTEND = EfficientATFrontEnd()
# Agreement the shipped file must reach against PyTorch, on the golden window.
TOLERANCE = 1e-4

# torchvision's ConvNormActivation as EfficientAT uses it: conv, optional norm, optional
# activation, in a Sequential so the state dict keys are <block>.0 / .1 / .2.
CONV_NORM_ACTIVATION = """
import torch


class ConvNormActivation(torch.nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None,
                 groups=1, norm_layer=torch.nn.BatchNorm2d, activation_layer=torch.nn.ReLU,
                 dilation=1, inplace=True, bias=None):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers = [torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                  dilation=dilation, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer() if inplace is None else activation_layer(inplace=inplace))
        super().__init__(*layers)
        self.out_channels = out_channels
"""


def golden_audio(seed: int = 11) -> np.ndarray:
    """Ten seconds of deterministic 32 kHz int16 audio: chords, a bass line, noise and clicks."""
    rng = np.random.default_rng(seed)
    sr = FRONTEND.sample_rate
    t = np.arange(FRONTEND.window_samples) / sr
    audio = np.zeros_like(t)
    chords = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7))  # A major, G major, 2 s each
    for i, chord in enumerate(chords):
        on = (t // 2) % 2 == i
        for f in chord:
            for h in (1, 2, 4):
                audio += on * 0.07 / h * np.sin(2 * np.pi * f * h * t)
    audio += 0.15 * np.sin(2 * np.pi * 55.0 * (1 + (t % 1 > 0.5)) * t)
    beat = (t * 2) % 1.0 < 0.04  # 120 BPM noise bursts
    audio += beat * rng.normal(0, 0.25, size=t.shape)
    clicks = rng.choice(len(t), size=40, replace=False)
    audio[clicks] += rng.choice([-0.6, 0.6], size=clicks.size)
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def labels(source: Path) -> list[str]:
    """AudioSet display names in the network's output order."""
    with open(source / "class_labels_indices.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    return [r["display_name"] for r in rows]


def load_kaldi_module(wheel: Path) -> types.ModuleType:
    """torchaudio's pure-Python ``compliance.kaldi`` from its wheel, without torchaudio's C++."""
    with zipfile.ZipFile(wheel) as zf:
        code = zf.read("torchaudio/compliance/kaldi.py").decode("utf-8")
    package = types.ModuleType("torchaudio")
    package.__path__ = []  # a package, so "torchaudio.compliance" resolves through sys.modules
    compliance = types.ModuleType("torchaudio.compliance")
    compliance.__path__ = []
    kaldi = types.ModuleType("torchaudio.compliance.kaldi")
    kaldi.__file__ = f"{wheel}!torchaudio/compliance/kaldi.py"
    package.compliance, compliance.kaldi = compliance, kaldi
    sys.modules.update(
        {
            "torchaudio": package,
            "torchaudio.compliance": compliance,
            "torchaudio.compliance.kaldi": kaldi,
        }
    )
    exec(compile(code, kaldi.__file__, "exec"), kaldi.__dict__)  # noqa: S102 - torchaudio's own file
    return kaldi


@contextlib.contextmanager
def upstream_importable(source: Path) -> Iterator[None]:
    """Make EfficientAT's code importable: stand-in torchvision, expected files in the cwd."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        misc = work / "standins" / "torchvision" / "ops"
        misc.mkdir(parents=True)
        for folder in (misc.parent, misc):
            (folder / "__init__.py").write_text("")
        (misc / "misc.py").write_text(CONV_NORM_ACTIVATION)
        for sub, name, target in (
            ("resources", WEIGHTS, source / WEIGHTS),
            ("metadata", "class_labels_indices.csv", source / "class_labels_indices.csv"),
        ):
            (work / sub).mkdir()
            (work / sub / name).symlink_to(target)
        sys.path[:0] = [str(work / "standins"), str(source / "code")]
        os.chdir(work)
        try:
            yield
        finally:
            os.chdir(previous)


def check_mel_bank(kaldi: types.ModuleType) -> float:
    """Compare torchaudio's filterbank with libtagger's port and the formula; return max diff."""
    fe = FRONTEND
    bank, centres = kaldi.get_mel_banks(
        fe.n_mels, fe.n_fft, fe.sample_rate, fe.fmin, fe.fmax, 100.0, -500.0, 1.0
    )
    bank = np.pad(bank.numpy(), ((0, 0), (0, 1)))
    ours = fe.mel_bank
    assert bank.shape == ours.shape == (fe.n_mels, fe.n_fft // 2 + 1), (bank.shape, ours.shape)
    diff = float(np.abs(bank - ours).max())
    # torchaudio works in float32: one rounding step of a bin's mel value (~2.4e-4 near
    # 2300 mel) over a filter slope ~18 mel wide is ~1.3e-5.
    assert diff < 5e-5, f"mel bank differs from torchaudio's by {diff}"
    # Independent of both: filter i peaks at the i+1-th of n_mels + 2 equally spaced mel
    # points, and is zero at or beyond its neighbours' peaks.
    mel_lo, mel_hi = kaldi_mel(fe.fmin), kaldi_mel(fe.fmax)
    step = (mel_hi - mel_lo) / (fe.n_mels + 1)
    bin_mel = 1127.0 * np.log(1 + np.arange(fe.n_fft // 2) * fe.sample_rate / fe.n_fft / 700.0)
    for i in range(fe.n_mels):
        centre = mel_lo + (i + 1) * step
        expected = np.clip(1 - np.abs(bin_mel - centre) / step, 0, None)
        assert np.allclose(ours[i, :-1], expected, atol=1e-5), f"filter {i} is not triangular"
    centre_hz = 700.0 * (np.exp((mel_lo + np.arange(1, fe.n_mels + 1) * step) / 1127.0) - 1)
    assert np.allclose(centres.numpy().ravel(), centre_hz, rtol=1e-5)
    assert not ours[:, -1].any(), "the Nyquist column must be zero"
    return diff


def build_network():
    """EfficientAT's ``mn04_as`` with its AudioSet weights, in eval mode."""
    import torch
    from models.mn.model import get_model

    net = get_model(width_mult=0.4, pretrained_name=NAME, strides=[2, 2, 2, 2], head_type="mlp")
    # Upstream falls back to a non-strict load with only a print; insist every weight landed.
    saved = torch.load(Path("resources") / WEIGHTS, map_location="cpu")
    loaded = net.state_dict()
    assert saved.keys() == loaded.keys(), "state dict keys differ (ConvNormActivation stand-in?)"
    assert all(torch.equal(saved[k], loaded[k]) for k in saved), "a weight did not load"
    return net.eval()


def _channel_se_forward(self, x):
    """Channel squeeze-excitation as upstream computes it, with no reshape in the graph.

    The two linear layers run as 1x1 convolutions on the pooled [b, c, 1, 1] map: a reshape
    would be exported with the tracing batch size baked into its target shape.
    """
    import torch
    import torch.nn.functional as F

    scale = torch.mean(x, dim=(2, 3), keepdim=True)
    scale = F.conv2d(scale, self.fc1.weight[:, :, None, None], self.fc1.bias)
    scale = F.conv2d(self.activation(scale), self.fc2.weight[:, :, None, None], self.fc2.bias)
    return x * self.scale_activation(scale)


def tagger_module(net):
    """Wrap the network: mel [b, 1, 128, t] → (sigmoid probabilities [b, 527], embedding).

    Upstream's squeeze-excitation reshapes with ``view`` of a traced shape, which litert-torch
    cannot lower with a symbolic batch; the replacements compute the same numbers (the
    caller compares the wrapper with upstream's forward).
    """
    import torch

    for module in list(net.modules()):
        if type(module).__name__ == "SqueezeExcitation":
            assert module.se_dim == [2, 3], "only channel squeeze-excitation is replaced"
            module.forward = types.MethodType(_channel_se_forward, module)
        if isinstance(module, torch.nn.Sequential):
            for i, child in enumerate(module):
                if type(child).__name__ == "ConcurrentSEBlock":
                    # One branch (channel only): the max over a stack of one is that branch,
                    # and the stack's view of a symbolic shape does not lower either.
                    assert len(child.conc_se_layers) == 1, "only single-branch SE is reduced"
                    module[i] = child.conc_se_layers[0]

    # The MLP head starts with average pooling and a flatten, which is the embedding itself;
    # the flatten's view does not lower with a symbolic batch, so the head runs from there.
    pool, flatten = net.classifier[0], net.classifier[1]
    assert isinstance(pool, torch.nn.AdaptiveAvgPool2d) and isinstance(flatten, torch.nn.Flatten)

    class Tagger(torch.nn.Module):
        """Upstream's forward without its batch-1 squeeze, plus the sigmoid."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.features = net.features
            self.head = net.classifier[2:]

        def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            embedding = self.features(mel).mean(dim=(2, 3))
            return torch.sigmoid(self.head(embedding)), embedding

    return Tagger(net).eval()


def convert(module, sample, dynamic_batch: bool, float16: bool) -> bytes:
    """Convert with litert-torch; return the TFLite flatbuffer."""
    import litert_torch
    import torch

    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=64)},)
    if float16:
        from litert_torch.generative.quantize import quant_recipes

        kwargs["quant_config"] = quant_recipes.full_fp16_recipe()
    edge = litert_torch.convert(module, (sample,), **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        edge.export(str(path))
        return path.read_bytes()


def run_tflite(content: bytes, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and embedding from a TFLite flatbuffer, resizing the batch if needed."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content, num_threads=1)
    index = interp.get_input_details()[0]["index"]
    if tuple(interp.get_input_details()[0]["shape"]) != mel.shape:
        interp.resize_tensor_input(index, list(mel.shape))
    interp.allocate_tensors()
    interp.set_tensor(index, mel)
    interp.invoke()
    out = {int(d["shape"][-1]): interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    return out[527], next(v for k, v in out.items() if k != 527)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--torchaudio-wheel", type=Path, required=True)
    parser.add_argument("--float16", action="store_true", help="try float16 weights")
    parser.add_argument("--no-dynamic-batch", action="store_true")
    args = parser.parse_args()
    source = args.source.resolve()
    digest = hashlib.sha256((source / WEIGHTS).read_bytes()).hexdigest()
    assert digest == WEIGHTS_SHA256, f"{WEIGHTS} has sha256 {digest}"

    import torch

    torch.manual_seed(0)
    kaldi = load_kaldi_module(args.torchaudio_wheel)
    bank_diff = check_mel_bank(kaldi)
    print(f"mel bank: max |torchaudio - numpy port| = {bank_diff:.2e}")

    audio_int16 = golden_audio()
    audio = torch.from_numpy(audio_int16.astype(np.float32) / 32768)[None]
    with upstream_importable(source):
        from models.preprocess import AugmentMelSTFT

        fe = FRONTEND
        mel_module = AugmentMelSTFT(
            n_mels=fe.n_mels,
            sr=fe.sample_rate,
            win_length=fe.win_length,
            hopsize=fe.hop_length,
            n_fft=fe.n_fft,
            freqm=0,
            timem=0,
            fmin=fe.fmin,
            fmax=fe.fmax,
        ).eval()
        net = build_network()
    with torch.no_grad():
        mel = mel_module(audio)[:, None]  # [1, 1, 128, frames]
        logits, features = net(mel)
        module = tagger_module(net)
        probs, embedding = module(mel)
    frames = fe.frames(fe.window_samples)
    assert mel.shape == (1, 1, fe.n_mels, frames), mel.shape
    assert torch.allclose(probs, torch.sigmoid(logits)) and torch.allclose(embedding, features)
    n_params = sum(p.numel() for p in net.parameters())
    print(
        f"front-end: {tuple(mel.shape)}; network {n_params:,} parameters, "
        f"embedding {embedding.shape[1]}"
    )

    ours = fe.log_mel(audio.numpy())
    print(f"front-end: max |numpy - torch| = {np.abs(ours - mel.numpy()).max():.2e}")

    mel_np = mel.numpy().astype(np.float32)
    probs_np, emb_np = probs.numpy(), embedding.numpy()
    dynamic = not args.no_dynamic_batch
    # A batch-1 sample would make torch.export specialise the batch dimension to 1.
    content = convert(module, mel.repeat(2, 1, 1, 1), dynamic, args.float16)
    for batch in (1, 3) if dynamic else (1,):
        tl_probs, tl_emb = run_tflite(content, np.repeat(mel_np, batch, axis=0))
        dp = float(np.abs(tl_probs - probs_np).max())
        de = float(np.abs(tl_emb - emb_np).max())
        print(f"tflite batch {batch}: max diff probabilities {dp:.2e}, embedding {de:.2e}")
        assert dp < TOLERANCE and de < TOLERANCE * max(1.0, float(np.abs(emb_np).max()))

    write_outputs(source, content, dynamic, args.float16, int(emb_np.shape[1]))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        GOLDEN,
        audio_int16=audio_int16,
        mel=mel_np,
        probabilities=probs_np.astype(np.float32),
        embedding=emb_np.astype(np.float32),
    )
    print(f"wrote {GOLDEN.relative_to(ROOT)} ({GOLDEN.stat().st_size / 1e6:.2f} MB)")


def write_outputs(source: Path, content: bytes, dynamic: bool, float16: bool, dim: int) -> None:
    """Write the TFLite file and its sidecar."""
    fe = FRONTEND
    names = labels(source)
    tflite_path = MODELS_DIR / f"{NAME}.tflite"
    tflite_path.write_bytes(content)
    sidecar = {
        "name": NAME,
        "architecture": "EfficientAT MobileNetV3 (width 0.4, MLP head)",
        "dataset": "AudioSet",
        "labels": names,
        "frontend": {
            "kind": "efficientat",
            "sample_rate": fe.sample_rate,
            "n_fft": fe.n_fft,
            "win_length": fe.win_length,
            "window": "hann (symmetric), zero-padded to n_fft around the centre",
            "hop_length": fe.hop_length,
            "center": True,
            "pad_mode": "reflect",
            "n_mels": fe.n_mels,
            "fmin": fe.fmin,
            "fmax": fe.fmax,
            "mel_scale": "kaldi (1127 ln(1 + f/700)), Nyquist bin weight 0",
            "power": 2.0,
            "preemphasis": fe.preemphasis,
            "log_offset": fe.log_offset,
            "normalisation": "(log(mel + log_offset) + 4.5) / 5",
            "window_seconds": fe.window_seconds,
            "patch_frames": fe.frames(fe.window_samples),
            "input_layout": "[batch, 1, n_mels, frames]",
        },
        "batch": "dynamic" if dynamic else 1,
        "outputs": {"probabilities": len(names), "embeddings": dim},
        "weights": "float16" if float16 else "float32",
        "published_map": 0.432,
        "sha256": hashlib.sha256(content).hexdigest(),
        "source": "EfficientAT (github.com/fschmid56/EfficientAT) release v0.0.1, "
        f"{WEIGHTS} (sha256 {WEIGHTS_SHA256})",
        "licence": "MIT, Copyright (c) 2022 Florian Schmid",
        "label_attribution": "AudioSet ontology labels, Google, CC BY 4.0",
    }
    (MODELS_DIR / f"{NAME}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {tflite_path.relative_to(ROOT)} ({len(content) / 1e6:.2f} MB), sidecar")


if __name__ == "__main__":
    main()
