"""Training throughput: our tf.data + in-model augmentation against the reports' ImageDataGenerator.

    python bench/train_throughput.py                          # demo set, ferlab, float32 and mixed_bfloat16
    python bench/train_throughput.py --data /path/fer2013.csv.gz --steps 30
    python bench/train_throughput.py --arch tiny --policies float32

Why: the reference reports trained with Keras 2's ``ImageDataGenerator``
(rotation_range, zoom_range, width/height_shift_range, shear_range,
horizontal_flip) feeding ``model.fit``, which augments one image at a time in
NumPy/SciPy. FER Lab instead feeds uint8 batches through ``tf.data`` and
augments whole batches with Keras layers inside the model. This measures what
that buys, in training images per second, for each dtype policy. Target: ours
at least 3x the baseline.

How, for each policy, in one process, one pipeline right after the other on
the same faces (so both run under the same machine load):

* ours: ``core.training.make_dataset`` (shuffle, batch, cast, one-hot,
  prefetch) and ``core.training.build_compiled`` on the default ``ModelSpec``
  (augmentation layers + Normalization inside the model), exactly as
  ``core.training.fit`` uses them;
* baseline: ``keras.src.legacy.preprocessing.image.ImageDataGenerator`` (it
  ships with Keras 3.15 and is a line-for-line port of Keras 2's: the same
  per-image ``scipy.ndimage.affine_transform`` loop in ``NumpyArrayIterator``)
  with ``.flow(x, one_hot_y, batch_size)`` fed to ``fit``, default
  ``workers=1``; as in Keras 2, the batches are made in a background thread
  one or more steps ahead of the model. The model is the same architecture
  built with ``ModelSpec(arch, augment=None)`` and compiled by
  ``build_compiled``, so it is the identical Keras 3 network minus the
  augmentation layers that the generator replaces. ``tf_keras`` (Keras 2) is
  not used: it would need a second, re-implemented copy of the model, while
  the legacy generator is the same code the reports ran.

Normalisation: both models keep our ``Normalization`` layer (training-set
mean and std) and the generator does no rescale or featurewise
standardisation, so the only difference between the two sides is where the
augmentation runs. Generator settings come from the same ``Augment``:
rotation 10 degrees, zoom 0.1, shift 0.1, horizontal flip, and shear as
``degrees(atan(0.1))`` = 5.7 degrees (Keras 2's ``shear_range`` is an angle in
degrees; Keras 3's ``RandomShear`` factor is the shear coefficient), fill
'nearest' on both sides. Transform magnitudes do not change either side's cost.

Timing: each side runs ``fit`` for one epoch of ``warmup + steps`` batches of
``batch_size`` faces (the training split tiled or cut to that many; the same
array for both). A callback takes the wall time at the end of every batch (it
reads the logs, which waits for the step); the rate is ``steps * batch_size``
over the time from the end of the last warm-up batch to the end of the last
batch, so tracing, the first shuffle-buffer fill and the generator's first
batches are excluded.

On a shared machine the absolute images/s are noisy; the ratio is the figure
to read, since both sides ran back to back under the same load.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # fit's default, as in training
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras.src.legacy.preprocessing.image import ImageDataGenerator  # noqa: E402

from core.data import FaceDataset, load_csv  # noqa: E402
from core.demo import make_demo  # noqa: E402
from core.models import DEFAULT_CNN, N_CLASSES, Augment, ModelSpec  # noqa: E402
from core.training import TrainConfig, build_compiled, hardware, make_dataset, training_split  # noqa: E402

TARGET = 3.0
BASELINE_NAME = "keras.src.legacy ImageDataGenerator (Keras 2 port) -> fit"
OURS_NAME = "core.training: tf.data + in-model augmentation"


class BatchClock(keras.callbacks.Callback):
    """Wall time at the end of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def images_per_second(model: keras.Model, data, warmup: int, steps: int, batch_size: int) -> float:
    """One epoch of ``fit`` over ``data`` (warmup + steps batches); rate over the last ``steps``."""
    clock = BatchClock()
    model.fit(data, epochs=1, verbose=0, callbacks=[clock])
    if len(clock.ends) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} batches, fit ran {len(clock.ends)}")
    return steps * batch_size / (clock.ends[-1] - clock.ends[warmup - 1])


def generator(aug: Augment) -> ImageDataGenerator:
    """The reports' generator with our augmentation's settings."""
    return ImageDataGenerator(
        rotation_range=aug.rotation_deg,
        zoom_range=aug.zoom,
        width_shift_range=aug.shift,
        height_shift_range=aug.shift,
        shear_range=math.degrees(math.atan(aug.shear)),
        horizontal_flip=aug.flip,
        fill_mode="nearest",
    )


def measure(train: FaceDataset, arch: str, policy: str, warmup: int, steps: int, batch_size: int) -> dict[str, float]:
    """images/s of both pipelines for one dtype policy, ours first, on the same faces."""
    config = TrainConfig(model=ModelSpec(arch), batch_size=batch_size, mixed_precision=policy == "mixed_bfloat16")
    rates = {}

    keras.utils.set_random_seed(0)
    model = build_compiled(config, train)
    ds = make_dataset(train.images, train.labels, batch_size, shuffle=True, seed=config.seed)
    rates["ours"] = images_per_second(model, ds, warmup, steps, batch_size)

    keras.utils.set_random_seed(0)
    base_config = TrainConfig(model=ModelSpec(arch, augment=None), batch_size=batch_size,
                              mixed_precision=config.mixed_precision)
    model = build_compiled(base_config, train)
    x = train.images[..., None].astype(np.float32)
    y = np.eye(N_CLASSES, dtype=np.float32)[train.labels]
    flow = generator(config.model.augment).flow(x, y, batch_size=batch_size, shuffle=True, seed=config.seed)
    rates["baseline"] = images_per_second(model, flow, warmup, steps, batch_size)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="FER2013 CSV (plain or .gz); default: the built-in demo set")
    parser.add_argument("--arch", default=DEFAULT_CNN)
    parser.add_argument("--steps", type=int, default=30, help="timed batches per pipeline")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (tracing, buffers)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--policies", default="float32,mixed_bfloat16")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")

    data = load_csv(args.data) if args.data else make_demo()
    train, _ = training_split(data, TrainConfig())
    n = (args.warmup + args.steps) * args.batch_size
    train = train.subset(np.arange(n) % len(train))  # tiled or cut: exactly warmup + steps full batches
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]

    print(f"machine: {hardware()}; tf {tf.__version__}, keras {keras.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"data: {data.source} training split, {n} faces per pipeline "
          f"({args.warmup} warm-up + {args.steps} timed batches of {args.batch_size}); model {args.arch}")
    print(f"baseline: {BASELINE_NAME}, model without augmentation layers")
    print(f"ours: {OURS_NAME}")
    print("both pipelines measured side by side in this one process, back to back per policy\n")

    results = {policy: measure(train, args.arch, policy, args.warmup, args.steps, args.batch_size) for policy in policies}

    print("| pipeline | policy | images/s | ours / baseline |")
    print("|---|---|---:|---:|")
    for policy, rates in results.items():
        ratio = rates["ours"] / rates["baseline"]
        print(f"| ours (tf.data + augmentation layers) | {policy} | {rates['ours']:.1f} | {ratio:.2f}x |")
        print(f"| baseline (ImageDataGenerator) | {policy} | {rates['baseline']:.1f} | 1.00x |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")
    for policy, rates in results.items():
        ratio = rates["ours"] / rates["baseline"]
        print(f"{policy}: ours is {ratio:.1f}x faster (target >= {TARGET:.0f}x): {'PASS' if ratio >= TARGET else 'FAIL'}")


if __name__ == "__main__":
    main()
