"""What a layer's filters respond to, and what the model thinks each emotion looks like.

``filter_images`` and ``class_images`` synthesise inputs by gradient ascent
(Erhan et al. 2009; the regularisers follow Olah et al. 2017, "Feature
Visualization"), like tf-keras-vis's ``ActivationMaximization`` but batched:
all requested filters (or all 7 classes) are optimised together as one batch
of K images, image k climbing objective k, so 64 filters cost about one
backward pass of 64 faces per step instead of 64 eager passes.
``feature_maps`` shows a layer's response to a real face.

Every image starts from the *same* noise, so the differences between two
results are the filters', not the noise's. Pixels stay raw 0..255 grey levels
(the model's own input space: augmentation is inactive at inference and the
normaliser is inside the model), so a returned image can be fed back to the
model to measure what it does; stretch its contrast for display if wanted.
"""

from __future__ import annotations

import os
from typing import Callable

import keras
import numpy as np
from scipy.ndimage import gaussian_filter

from core.data import SIZE
from core.explain.base import cached, layer_model
from core.explain.gradients import layer_gradients, score_gradients
from core.models import input_stats

ENV_STEPS = "FERLAB_VIS_STEPS"  # caps every ascent's steps (tests set it small)
STEP = 2.0  # grey levels (RMS over the image) each step moves
DECAY = 0.01  # L2 pull toward mean grey per step: what no objective needs fades away
JITTER = 2  # px: the image is shifted at random before each step, so it must work at every nearby position
BLUR_EVERY, BLUR_SIGMA = 4, 0.5  # a light blur every few steps removes pixel-grid noise the gradient leaves
START_NOISE = 0.1  # the start's noise std, as a fraction of the training set's grey-level std


def capped_steps(steps: int) -> int:
    """``steps``, lowered to ``$FERLAB_VIS_STEPS`` when that is set."""
    cap = os.environ.get(ENV_STEPS)
    return min(steps, int(cap)) if cap else steps


def filter_images(
    model: keras.Model, layer_name: str, filter_indices: list[int] | np.ndarray, steps: int = 100, seed: int = 0
) -> np.ndarray:
    """(K,) filters of a conv layer -> (K, 48, 48) uint8 faces maximising each one's mean activation.

    ``steps=0`` returns the starting noise (what the ascent improves on).
    """
    channels = np.asarray(filter_indices, dtype=np.int32).reshape(-1)
    n_filters = int(model.get_layer(layer_name).output.shape[-1])
    if len(channels) == 0 or channels.min() < 0 or channels.max() >= n_filters:
        raise ValueError(f"filter_indices must be non-empty, in 0..{n_filters - 1} for layer '{layer_name}'")
    return _ascend(model, lambda faces: layer_gradients(model, layer_name, faces, channels), len(channels), steps, seed)


def class_images(model: keras.Model, steps: int = 200, seed: int = 0) -> np.ndarray:
    """(7, 48, 48) uint8: for each emotion, a face grown from noise to raise that emotion's logit.

    ``steps=0`` returns the starting noise. An ensemble's logit is the log of
    its averaged probability (see ``core.explain.base``).
    """
    classes = np.arange(int(model.outputs[0].shape[-1]), dtype=np.int32)
    return _ascend(model, lambda faces: score_gradients(model, "logit", faces, classes), len(classes), steps, seed)


def feature_maps(model: keras.Model, layer_name: str, image: np.ndarray) -> np.ndarray:
    """One (48, 48) or (48, 48, 1) raw face -> (C, h, w) float32: the layer's response, one map per filter."""
    net = cached(model, ("layer", layer_name), lambda: layer_model(model, layer_name))
    out = np.asarray(net(np.asarray(image, np.float32).reshape(1, SIZE, SIZE, 1), training=False))  # (1, h, w, C)
    if out.ndim != 4:
        raise ValueError(f"layer '{layer_name}' has no spatial maps (output shape {out.shape[1:]})")
    return np.moveaxis(out[0], -1, 0).astype(np.float32)


def _ascend(
    model: keras.Model, gradient: Callable[[np.ndarray], np.ndarray], k: int, steps: int, seed: int
) -> np.ndarray:
    """Gradient ascent on K images at once; ``gradient``: (K, 48, 48, 1) -> (K, 48, 48, 1)."""
    mean, std = input_stats(model)
    rng = np.random.default_rng(seed)
    start = mean + START_NOISE * std * rng.standard_normal((1, SIZE, SIZE, 1))
    x = np.repeat(start, k, axis=0).astype(np.float32)  # (K, 48, 48, 1)
    for step in range(capped_steps(steps)):
        shift = tuple(int(s) for s in rng.integers(-JITTER, JITTER + 1, size=2))
        g = np.roll(gradient(np.roll(x, shift, axis=(1, 2))), (-shift[0], -shift[1]), axis=(1, 2))
        g /= np.sqrt(np.mean(g**2, axis=(1, 2, 3), keepdims=True)) + 1e-12  # (K,1,1,1): same pace for every image
        x = mean + (x + STEP * g - mean) * (1 - DECAY)
        if step % BLUR_EVERY == BLUR_EVERY - 1:
            x = gaussian_filter(x, sigma=(0, BLUR_SIGMA, BLUR_SIGMA, 0))
        x = np.clip(x, 0, 255).astype(np.float32)
    return np.round(x[..., 0]).astype(np.uint8)
