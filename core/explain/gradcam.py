"""Grad-CAM (Selvaraju et al. 2017) on the last convolutional layer.

Our own ~10-line GradientTape version rather than tf-keras-vis's ``Gradcam``:
tf-keras-vis does work on a single Keras 3 model, but it builds a new
sub-model and runs eagerly on every call (~57 ms a face on the ferlab CNN
against 6-10 ms traced, on the shared 2-core dev box); on an ensemble it picks
one member's conv layer and fails ("not connected to inputs"); and it
upsamples with corner-aligned ``scipy.ndimage.zoom``, which shifts a 6x6 map
by up to half a cell. Here the map is resized with pixel-centre alignment, so
cell (i, j) of a 6x6 map is centred on pixels 8i..8i+7, 8j..8j+7.
tests/test_explain.py checks that both give the same map at the layer's
resolution.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from core.data import SIZE
from core.explain.base import CLASSES_SPEC, FACES_SPEC, Explainer, Score, cached, in_batches, normalise, score_tensor
from core.models import last_conv_layer


def cam_sources(model: keras.Model) -> list[tuple[keras.Model, str]]:
    """(network, its last conv layer) for each Grad-CAM to compute: the model, or each ensemble member.

    Raises ValueError for a model without convolutions (a DNN has no spatial
    feature maps to weight).
    """
    layer = last_conv_layer(model)
    if layer is not None:
        return [(model, layer)]
    members = [m for m in model.layers if isinstance(m, keras.Model)]
    sources = [(m, last_conv_layer(m)) for m in members]
    if not members or any(name is None for _, name in sources):
        raise ValueError(
            f"Grad-CAM needs a convolutional layer, and model '{model.name}' has none "
            "(a DNN has no spatial feature maps to weight); use saliency, SmoothGrad or LIME"
        )
    return sources  # type: ignore[return-value]


def _cam_function(net: keras.Model, layer_name: str, score: Score) -> Callable[[np.ndarray, np.ndarray], tf.Tensor]:
    features_and_score = keras.Model(net.input, [net.get_layer(layer_name).output, score_tensor(net, score)])

    @tf.function(input_signature=[FACES_SPEC, CLASSES_SPEC])
    def cam(faces: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:  # (B,48,48,1), (B,) -> (B,48,48)
        with tf.GradientTape() as tape:
            features, scores = features_and_score(faces, training=False)  # (B,h,w,C), (B,7)
            features = tf.cast(features, tf.float32)  # mixed-precision models compute in bfloat16
            picked = tf.gather(tf.cast(scores, tf.float32), targets, batch_dims=1)  # (B,)
        grads = tape.gradient(picked, features)  # (B,h,w,C)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (B,1,1,C): each filter's importance
        heat = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))  # (B,h,w,1)
        return tf.image.resize(heat, (SIZE, SIZE), method="bilinear")[..., 0]

    return cam


class GradCAM(Explainer):
    """The last conv layer's feature maps weighted by their mean gradient, ReLU'd, upsampled.

    Coarse by design (6x6 cells on ferlab, 8 px each): it shows which *part*
    of the face the deep features that drive the class sit in. The layer is
    the last Conv2D itself (before its BatchNorm and activation), as
    ``core.models.last_conv_layer`` names it. For an ensemble each member's
    Grad-CAM (on its own score) is scaled to max 1 and the maps are averaged,
    so every member has the same say, as in the ensemble's average.
    """

    description = "Grad-CAM: the last conv layer's maps weighted by their gradient (coarse regions, fast; CNNs only)"

    def __init__(self, model: keras.Model, *, score: Score = "logit"):
        super().__init__(model, score=score)
        self.sources = cam_sources(model)  # fail at construction, before anyone waits for a map

    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        maps = []
        for net, layer in self.sources:
            fn = cached(net, ("gradcam", layer, self.score), lambda: _cam_function(net, layer, self.score))
            maps.append(normalise(in_batches(fn, faces, targets)))
        return np.mean(maps, axis=0)  # (N, 48, 48)
