"""The gradient core shared by saliency, SmoothGrad and the gradient-ascent pictures.

One compiled function, ``d mean(channel c of an output) / d face``, covers all
of them: for a (B, 7) score the "channel" is the class and the mean is over a
single position; for a (B, h, w, C) conv output it is a filter's mean
activation. Each face in a batch gets its own gradient, because faces do not
interact at inference (BatchNorm uses its moving statistics), so the gradient
of the batch's sum is every face's gradient at once.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from core.explain.base import CLASSES_SPEC, FACES_SPEC, Score, cached, in_batches, layer_model, score_model


def _gradient_function(net: keras.Model) -> Callable[[np.ndarray, np.ndarray], tf.Tensor]:
    """Traced once per network; eager gradients are ~8x slower on a 48x48 CNN."""

    @tf.function(input_signature=[FACES_SPEC, CLASSES_SPEC])
    def gradient(faces: tf.Tensor, channels: tf.Tensor) -> tf.Tensor:  # (B,48,48,1), (B,) -> (B,48,48,1)
        with tf.GradientTape() as tape:
            tape.watch(faces)
            out = tf.cast(net(faces, training=False), tf.float32)  # (B, ..., C)
            flat = tf.reshape(out, (tf.shape(out)[0], -1, tf.shape(out)[-1]))  # (B, P, C)
            objective = tf.reduce_mean(tf.gather(flat, channels, axis=2, batch_dims=1), axis=1)  # (B,)
        return tape.gradient(objective, faces)

    return gradient


def score_gradients(model: keras.Model, score: Score, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N, 48, 48, 1) float32, (N,) int32 -> (N, 48, 48, 1): d score[target] / d face."""
    fn = cached(model, ("gradient", "score", score), lambda: _gradient_function(score_model(model, score)))
    return in_batches(fn, faces, targets)


def layer_gradients(model: keras.Model, layer_name: str, faces: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """(N, 48, 48, 1) float32, (N,) int32 -> (N, 48, 48, 1): d mean(channel of the layer) / d face."""
    fn = cached(model, ("gradient", "layer", layer_name), lambda: _gradient_function(layer_model(model, layer_name)))
    return in_batches(fn, faces, channels)
