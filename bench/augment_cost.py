"""What the augmentation layers cost a training step, under the Keras backend in use.

    KERAS_BACKEND=jax python bench/augment_cost.py --model ferlab-wide --bf16
    python bench/augment_cost.py --model tiny --steps 10        # TensorFlow (the default backend)

Why: under JAX, Keras resamples each affine layer (rotation, zoom, shift, shear)
with ``map_coordinates``, linear over height, width and channel; on a lent GPU
the shipped recipe's augmentation did not get through its first fit in 40 s
while the bare net compiled in 21 s. This measures, side by side in one run,
the same net with no augmentation, flip + erasing, and the four affine layers
with bilinear (the shipped runs) and nearest resampling (``--interpolation
nearest``): the first fit of ``--steps`` steps (compilation included) and the
median step of three more fits, each as a ratio to the bare net's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from core.data import SIZE  # noqa: E402
from core.models import N_CLASSES, Augment, ModelSpec, build_model  # noqa: E402

AFFINE_OFF = {"rotation_deg": 0.0, "zoom": 0.0, "shift": 0.0, "shear": 0.0}
VARIANTS: dict[str, Augment | None] = {
    "none": None,
    "flip + erasing": Augment(**AFFINE_OFF, erasing=0.5),
    "+ affine, bilinear": Augment(erasing=0.5),
    "+ affine, nearest": Augment(erasing=0.5, interpolation="nearest"),
}


def fit_seconds(model: keras.Model, faces: np.ndarray, labels: np.ndarray, batch: int) -> float:
    """Seconds for one pass of ``fit`` over ``faces``."""
    start = time.perf_counter()
    model.fit(faces, labels, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ferlab", help="an architecture preset (core.models.PRESETS)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="steps a fit")
    parser.add_argument("--bf16", action="store_true", help="mixed_bfloat16 compute")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (args.steps * args.batch, SIZE, SIZE, 1)).astype("float32")
    labels = rng.integers(0, N_CLASSES, len(faces))
    policy = "mixed_bfloat16" if args.bf16 else "float32"
    print(f"backend {keras.backend.backend()}, {args.model}, {policy}, {args.steps} steps of {args.batch}")
    print("| augmentation | first fit (s, compilation included) | x none | ms a step | x none |")
    print("|---|---:|---:|---:|---:|")
    base: tuple[float, float] | None = None
    for name, augment in VARIANTS.items():
        keras.utils.set_random_seed(0)
        model = build_model(ModelSpec(args.model, augment), policy=policy)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
        first = fit_seconds(model, faces, labels, args.batch)
        step_ms = statistics.median(fit_seconds(model, faces, labels, args.batch) for _ in range(3)) / args.steps * 1e3
        base = base or (first, step_ms)
        print(f"| {name} | {first:.2f} | {first / base[0]:.2f} | {step_ms:.1f} | {step_ms / base[1]:.2f} |", flush=True)
        keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
