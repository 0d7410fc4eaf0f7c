"""A trained model's weights stored at half the bytes: float16 kernels on disk.

The shipped FER2013 runs must fit in 40 MB of the repo. A ``.keras`` file keeps
every weight as float32; five ensemble members of 1.2M parameters are 25 MB.
Here the conv and dense kernels (the ndim >= 2 arrays: nearly all the bytes) are
stored as float16, while biases, BatchNorm statistics and the normaliser's
mean/std stay float32 -- they are tiny, and the moving variances and grey-level
statistics are where float16's 3 significant digits would cost accuracy.

The model is rebuilt from its ``ModelSpec`` (our code, no deserialised
functions: as safe as Keras' ``safe_mode``) and computes in float32, so
explainers get full-precision gradients; only the stored values are rounded.
The accuracy this costs is measured when a run is packed
(``python -m core pack``, see ``RunStore.pack``).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from core.models import ModelSpec, input_stats, plain_model

FILENAME = "model.f16.npz"


def save_float16(model: keras.Model, path: Path) -> None:
    """Write ``model``'s weights (kernels as float16) to ``path``, atomically."""
    mean, std = input_stats(model)
    arrays = {"mean": np.float32(mean), "std": np.float32(std)}
    for i, w in enumerate(model.get_weights()):
        arrays[f"w{i:03d}"] = w.astype(np.float16) if w.ndim >= 2 else w.astype(np.float32)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_float16(path: Path, spec: ModelSpec) -> keras.Model:
    """The float32 inference model (no augmentation layers) with the stored weights."""
    with np.load(path, allow_pickle=False) as npz:
        mean, std = float(npz["mean"]), float(npz["std"])
        names = sorted(k for k in npz.files if k.startswith("w"))
        weights = [npz[k].astype(np.float32) for k in names]
    try:
        return plain_model(spec, mean, std, weights)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
