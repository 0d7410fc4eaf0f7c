"""A trained model's weights stored in fewer bytes: float16 or int8 kernels on disk.

The shipped FER2013 runs must fit in 40 MB of the repo. A ``.keras`` file keeps
every weight as float32; five ensemble members of 1.2M parameters are 25 MB.
Here the conv and dense kernels (the ndim >= 2 arrays: nearly all the bytes) are
stored smaller, while biases, BatchNorm statistics and the normaliser's
mean/std stay float32 -- they are tiny, and the moving variances and grey-level
statistics are where a few significant digits would cost accuracy.

Two kernel formats:

* ``float16``: half the bytes, 3 significant digits per weight.
* ``int8``: a quarter of the bytes; each output unit's kernel slice is scaled to
  [-127, 127] (symmetric, one float32 scale per output channel, the last axis),
  so a unit with small weights keeps its resolution. For the big dense nets
  (a DNN matched to a 4.7M-parameter CNN is 9 MB even in float16).

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

FILENAMES = {"float16": "model.f16.npz", "int8": "model.i8.npz"}
PRECISIONS = ("float32", "float16", "int8")  # fewer bytes each: a run can only move right, the dropped bits are gone


def weights_file(run_path: Path, stored_as: str) -> Path:
    """The file holding a run's weights as its metrics say they are stored (``model.keras`` for float32).

    Named by the metrics, not found by looking: ``RunStore.pack`` writes the new
    file and the new metrics before it deletes the old file, so for a moment
    both files are there, and the metrics say which one is the run's.
    """
    return run_path / FILENAMES.get(stored_as, "model.keras")


def quantize_int8(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``kernel`` as int8 codes and one float32 scale per output channel (last axis):
    ``codes * scale`` is within half a step (``scale / 2``) of every weight."""
    peak = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)  # (units,)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(kernel / scale), -127, 127).astype(np.int8)
    return codes, scale


def save_packed(model: keras.Model, path: Path, kernels: str) -> None:
    """Write ``model``'s weights with ``kernels`` ('float16' or 'int8') kernels to ``path``, atomically."""
    if kernels not in FILENAMES:
        raise ValueError(f"unknown kernel format '{kernels}' (one of: {', '.join(FILENAMES)})")
    mean, std = input_stats(model)
    arrays = {"mean": np.float32(mean), "std": np.float32(std)}
    for i, w in enumerate(model.get_weights()):
        if w.ndim < 2:
            arrays[f"w{i:03d}"] = w.astype(np.float32)
        elif kernels == "float16":
            arrays[f"w{i:03d}"] = w.astype(np.float16)
        else:
            arrays[f"w{i:03d}"], arrays[f"s{i:03d}"] = quantize_int8(w)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def read_packed(path: Path) -> tuple[float, float, list[np.ndarray]]:
    """(mean, std, weights) of a packed file: the normaliser's statistics and every
    weight as float32, in ``model.get_weights()`` order."""
    with np.load(path, allow_pickle=False) as npz:
        mean, std = float(npz["mean"]), float(npz["std"])
        names = sorted(k for k in npz.files if k.startswith("w"))
        scales = {k: npz[f"s{k[1:]}"] for k in names if f"s{k[1:]}" in npz.files}
        weights = [npz[k].astype(np.float32) * scales.get(k, np.float32(1)) for k in names]
    return mean, std, weights


def load_packed(path: Path, spec: ModelSpec) -> keras.Model:
    """The float32 inference model (no augmentation layers) with the stored weights."""
    mean, std, weights = read_packed(path)
    try:
        return plain_model(spec, mean, std, weights)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
