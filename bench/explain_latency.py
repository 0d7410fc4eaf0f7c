"""How long one face's explanation takes, and what batching the filter pictures buys.

    python bench/explain_latency.py [--model runs/<id>/model.keras] [--repeats 7]

Times, on one demo face and the default CNN (``ferlab``, freshly built unless
``--model`` names a saved one; weights do not change the cost): saliency,
SmoothGrad (20 samples), Grad-CAM and LIME (1000 samples), median of
``--repeats`` runs after a warm-up that traces the compiled functions. LIME's
floor, 1000 plain forward passes, is printed next to it. Then a 64-filter
gradient-ascent grid: ``core.explain.filters.filter_images`` (all filters in
one batch) against tf-keras-vis ``ActivationMaximization`` one filter at a
time with the same number of steps; tf-keras-vis is timed on a few filters
and extrapolated to 64 (the output says so).

Wall time depends on what else the machine runs; CPU time (this process, all
threads) is printed too, as the steadier number on a shared box.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from core.demo import make_demo  # noqa: E402
from core.explain import EXPLAINERS  # noqa: E402
from core.explain.base import score_model  # noqa: E402
from core.explain.filters import ENV_STEPS, filter_images  # noqa: E402
from core.models import DEFAULT_CNN, ModelSpec, build_model, conv_layers  # noqa: E402

# (label, registry key, knobs, target ms)
METHODS = [
    ("saliency", "saliency", {}, 50),
    ("SmoothGrad (20)", "smoothgrad", {"n_samples": 20}, 300),
    ("Integrated Gradients (32)", "integrated", {"steps": 32}, 300),
    ("Grad-CAM", "gradcam", {}, 50),
    ("Grad-CAM++", "gradcampp", {}, 50),
    ("occlusion (8 px, stride 4)", "occlusion", {}, 300),
    ("LIME (1000)", "lime", {"n_samples": 1000}, 1500),
]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of ``fn`` after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def tkv_filters(model: keras.Model, layer: str, filters: list[int], steps: int) -> np.ndarray:
    """tf-keras-vis ActivationMaximization, one filter per call, as its docs show it."""
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.activation_maximization.input_modifiers import Jitter
    from tf_keras_vis.activation_maximization.regularizers import Norm

    net = keras.Model(model.inputs, model.get_layer(layer).output)  # tf-keras-vis passes a list of inputs
    visualise = ActivationMaximization(net, clone=False)
    seed = np.random.default_rng(0).uniform(118, 138, (1, 48, 48, 1)).astype(np.float32)
    images = []
    for f in filters:
        image = visualise(
            lambda out, f=f: tf.reduce_mean(out[..., f], axis=(1, 2)),
            seed_input=seed,
            input_range=(0, 255),
            input_modifiers=[Jitter(jitter=2)],
            regularizers=[Norm(weight=0.01, p=2)],
            steps=steps,
            optimizer=keras.optimizers.RMSprop(1.0, 0.999),
        )
        images.append(np.asarray(image)[0, ..., 0])
    return np.stack(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a saved .keras model (default: a fresh ferlab)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="gradient-ascent steps for both filter methods")
    parser.add_argument("--tkv-filters", type=int, default=2, help="filters to time tf-keras-vis on (then x64/n)")
    args = parser.parse_args()
    if os.environ.pop(ENV_STEPS, None) is not None:
        print(f"note: ignoring ${ENV_STEPS} so both ascent methods run {args.steps} steps")

    model = keras.models.load_model(args.model) if args.model else build_model(ModelSpec(DEFAULT_CNN))
    face = make_demo(n_per_class=1, test_per_class=0, seed=0).images[:1]  # (1, 48, 48)
    target = np.array([3])
    print(f"model {model.name} ({args.model or 'fresh'}), tf {tf.__version__}, keras {keras.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    print(f"\n{'method':<18}{'wall ms':>9}{'CPU ms':>9}{'target':>9}  pass")
    for label, key, knobs, target_ms in METHODS:
        explainer = EXPLAINERS[key](model, **knobs)
        wall, cpu = timed(lambda: explainer.explain(face, target), args.repeats)
        print(f"{label:<18}{wall:9.1f}{cpu:9.1f}{target_ms:9d}  {'PASS' if wall <= target_ms else 'FAIL'}")
    logits = score_model(model, "logit")
    forward = tf.function(lambda x: logits(x, training=False))
    batch = np.repeat(face[..., None].astype(np.float32), 250, axis=0)
    wall, cpu = timed(lambda: [forward(batch).numpy() for _ in range(4)], args.repeats)
    print(f"{'  1000 forwards':<18}{wall:9.1f}{cpu:9.1f}{'':>9}  (LIME's floor: the model calls alone)")

    layer = next(name for name in conv_layers(model) if model.get_layer(name).output.shape[-1] >= 64)
    grid = list(range(64))
    ours, _ = timed(lambda: filter_images(model, layer, grid, steps=args.steps), max(1, args.repeats // 3))
    few = grid[: args.tkv_filters]
    theirs_few, _ = timed(lambda: tkv_filters(model, layer, few, args.steps), 1)
    theirs = theirs_few * len(grid) / len(few)
    print(f"\n64 filters of {layer}, {args.steps} steps each:")
    print(f"  batched filter_images            {ours / 1e3:8.2f} s")
    print(f"  tf-keras-vis, one at a time      {theirs / 1e3:8.2f} s  (timed on {len(few)} filters, "
          f"{theirs_few / 1e3:.2f} s, extrapolated x{len(grid) / len(few):.0f})")
    print(f"  speed-up                         {theirs / ours:8.1f}x")


if __name__ == "__main__":
    main()
