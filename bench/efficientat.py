"""Time EfficientAT mn04_as on one thread: front-end and model per 10-s window, first invoke.

Run from the repository root (about half a minute):

    PYTHONPATH=. python bench/efficientat.py
    PYTHONPATH=. python bench/efficientat.py --repeats 50 --batch 4

The audio is the golden fixture's ten seconds (tests/data/golden_efficientat.npz). Each figure
is the median wall time of ``--repeats`` calls after the first. "First invoke" is the first
``invoke()`` after ``allocate_tensors()`` on a fresh interpreter, compared across LiteRT's op
resolvers: the default one applies the XNNPACK delegate, whose weight packing happens on
first use. numpy's BLAS is held to one thread for the front-end (threadpoolctl).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from threadpoolctl import threadpool_limits

from libtagger.analysis.efficientat_frontend import EfficientATFrontEnd

REPO = Path(__file__).resolve().parent.parent
TFLITE = REPO / "libtagger" / "models" / "mn04_as.tflite"
GOLDEN = REPO / "tests" / "data" / "golden_efficientat.npz"
RESOLVERS = {
    "default (XNNPACK)": OpResolverType.AUTO,
    "builtin, no delegate": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``call`` in milliseconds, over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def interpreter(resolver: OpResolverType, batch: int) -> tuple[Interpreter, int, float]:
    """A fresh one-thread interpreter for ``batch`` patches, its input index and set-up ms."""
    start = time.perf_counter()
    interp = Interpreter(
        model_path=str(TFLITE), num_threads=1, experimental_op_resolver_type=resolver
    )
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, [batch, 1, 128, 1000])
    interp.allocate_tensors()
    return interp, index, 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1, help="windows per model call")
    args = parser.parse_args()

    fe = EfficientATFrontEnd()
    with np.load(GOLDEN) as golden:
        audio = golden["audio_int16"].astype(np.float32) / 32768
    windows = np.repeat(audio[None], args.batch, axis=0)

    with threadpool_limits(limits=1):
        fe.log_mel(windows[:1])  # builds the cached window and mel bank
        frontend_ms = median_ms(lambda: fe.log_mel(windows), args.repeats) / args.batch
    patches = fe.log_mel(windows)
    print(f"batch {args.batch}, {args.repeats} repeats, one thread")
    print(f"front-end (numpy, scipy.fft): {frontend_ms:6.1f} ms per 10-s window")

    for label, resolver in RESOLVERS.items():
        interp, index, setup_ms = interpreter(resolver, args.batch)
        interp.set_tensor(index, patches)
        start = time.perf_counter()
        interp.invoke()
        first_ms = 1000 * (time.perf_counter() - start)

        def call(interp: Interpreter = interp, index: int = index) -> None:
            interp.set_tensor(index, patches)
            interp.invoke()

        steady_ms = median_ms(call, args.repeats)
        cpu_start = time.process_time()
        for _ in range(args.repeats):
            call()
        cpu_ms = 1000 * (time.process_time() - cpu_start) / args.repeats
        # What libtagger's Model does when the number of windows changes: resize, re-plan.
        other = np.concatenate([patches, patches[:1]])
        start = time.perf_counter()
        interp.resize_tensor_input(index, list(other.shape))
        interp.allocate_tensors()
        interp.set_tensor(index, other)
        interp.invoke()
        resize_ms = 1000 * (time.perf_counter() - start)
        print(
            f"model, {label:21s}: load+allocate {setup_ms:5.1f} ms, first invoke "
            f"{first_ms:5.1f} ms, steady {steady_ms / args.batch:5.1f} ms per window "
            f"(CPU {cpu_ms / args.batch:5.1f}), resize to batch {len(other)} + first invoke "
            f"{resize_ms:5.1f} ms"
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
