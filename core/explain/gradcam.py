"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018) on the last conv layer.

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

from typing import Callable, ClassVar

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
            "(a DNN has no spatial feature maps to weight); the gradient, perturbation and LIME methods work on any model"
        )
    return sources  # type: ignore[return-value]


def mean_gradient_weights(grads: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """Grad-CAM: (B,h,w,C) gradients, features -> (B,1,1,C), each filter's mean gradient."""
    return tf.reduce_mean(grads, axis=(1, 2), keepdims=True)


def plus_plus_weights(grads: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++: (B,h,w,C) gradients, features -> (B,1,1,C) weights sum_ij alpha_ij relu(g_ij).

    alpha_ij = g^2 / (2 g^2 + sum_ab A_ab g^3) is the paper's closed form
    (its eq. 19) for the exponential of the score, whose higher derivatives
    are powers of the gradient g when the layers above are piecewise linear;
    exp(score) itself scales every weight of a face alike, so it drops out
    after normalisation (and cannot overflow here). As in the authors' code
    and tf-keras-vis, each filter's alphas are then divided by their sum over
    positions; a zero denominator counts as 1.
    """
    g2 = tf.square(grads)
    denominator = 2.0 * g2 + tf.reduce_sum(features, axis=(1, 2), keepdims=True) * g2 * grads
    alphas = g2 / tf.where(denominator == 0.0, 1.0, denominator)
    total = tf.reduce_sum(alphas, axis=(1, 2), keepdims=True)
    alphas = alphas / tf.where(total == 0.0, 1.0, total)
    return tf.reduce_sum(alphas * tf.nn.relu(grads), axis=(1, 2), keepdims=True)


Weighting = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _cam_function(net: keras.Model, layer_name: str, score: Score, weighting: Weighting) -> Callable[[np.ndarray, np.ndarray], tf.Tensor]:
    features_and_score = keras.Model(net.input, [net.get_layer(layer_name).output, score_tensor(net, score)])

    @tf.function(input_signature=[FACES_SPEC, CLASSES_SPEC])
    def cam(faces: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:  # (B,48,48,1), (B,) -> (B,48,48)
        with tf.GradientTape() as tape:
            features, scores = features_and_score(faces, training=False)  # (B,h,w,C), (B,7)
            features = tf.cast(features, tf.float32)  # mixed-precision models compute in bfloat16
            picked = tf.gather(tf.cast(scores, tf.float32), targets, batch_dims=1)  # (B,)
        grads = tape.gradient(picked, features)  # (B,h,w,C)
        weights = weighting(grads, features)  # (B,1,1,C): each filter's importance
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

    title = "Grad-CAM"
    needs_conv = True
    description = "Grad-CAM: the last conv layer's maps weighted by their gradient (coarse regions, fast; CNNs only)"
    weighting: ClassVar[Weighting] = staticmethod(mean_gradient_weights)

    def __init__(self, model: keras.Model, *, score: Score = "logit"):
        super().__init__(model, score=score)
        self.sources = cam_sources(model)  # fail at construction, before anyone waits for a map

    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        maps = []
        for net, layer in self.sources:
            key = ("cam", self.weighting.__name__, layer, self.score)
            fn = cached(net, key, lambda: _cam_function(net, layer, self.score, self.weighting))
            maps.append(normalise(in_batches(fn, faces, targets)))
        return np.mean(maps, axis=0)  # (N, 48, 48)


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM with each position's gradient weighted by ``plus_plus_weights``' alphas.

    Grad-CAM's mean gradient lets a filter that fires strongly in one small
    place count as little as one that fires weakly everywhere; Grad-CAM++
    weights the positive gradients position by position, so several separate
    regions of evidence (two eyes and a mouth) all show.
    """

    title = "Grad-CAM++"
    description = "Grad-CAM++: Grad-CAM with position-wise weights, so several regions of evidence all show (CNNs only)"
    weighting = staticmethod(plus_plus_weights)
