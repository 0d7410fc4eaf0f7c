"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018) on the last conv layer.

Our own ~10-line GradientTape version rather than tf-keras-vis's ``Gradcam``:
tf-keras-vis does work on a single Keras 3 model, but it builds a new
sub-model and runs eagerly on every call (~57 ms a face on the ferlab CNN
against 6-10 ms traced, on the shared 2-core dev box); on an ensemble it picks
one member's conv layer and fails ("not connected to inputs"); and it
upsamples with corner-aligned ``scipy.ndimage.zoom``, which shifts a 6x6 map
by up to half a cell. Here each cell is drawn where its receptive field is
centred (``cell_centres``, from the layers' kernels, strides and padding):
with 'same' padding throughout that is plain pixel-centre resizing, cell
(i, j) of a 6x6 map on pixels 8i..8i+7, 8j..8j+7; after 'valid' convolutions
(the ``vgg6avg`` preset) the cells sit nearer the middle of the face, and
stretching them over all 48 pixels would draw mouth evidence on the chin.
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
        lacking = "has a member without one" if members else "has none"
        raise ValueError(
            f"Grad-CAM needs a convolutional layer, and model '{model.name}' {lacking} "
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


def _through(geometry: tuple[float, float], window: int, stride: int, padding: str, n_in: int, n_out: int) -> tuple[float, float]:
    """(start, step) of one axis after a window layer: output cell j covers inputs j*stride - before ..."""
    start, step = geometry
    before = max((n_out - 1) * stride + window - n_in, 0) // 2 if padding == "same" else 0  # TF pads the end more
    return start + step * ((window - 1) / 2 - before), step * stride


def cell_centres(net: keras.Model, layer_name: str) -> list[tuple[float, float, int]]:
    """(start, step, cells) for rows and columns: cell j of the layer's output is centred on pixel start + step*j.

    Walks the layers from the input: a convolution or pooling moves the
    centres by its window and padding and multiplies the step by its stride;
    any other layer must keep the image size (augmentation, BatchNorm, ...).
    """
    geometry = [(0.0, 1.0), (0.0, 1.0)]
    for layer in net.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        n_in, n_out = tuple(layer.input.shape[1:3]), tuple(layer.output.shape[1:3])
        window = getattr(layer, "pool_size", None) or getattr(layer, "kernel_size", None)
        if window is not None and hasattr(layer, "strides"):
            dilation = getattr(layer, "dilation_rate", (1, 1))
            geometry = [
                _through(geometry[a], dilation[a] * (window[a] - 1) + 1, layer.strides[a], layer.padding, n_in[a], n_out[a])
                for a in (0, 1)
            ]
        elif n_in != n_out:
            raise ValueError(f"Grad-CAM cannot place the cells of '{layer_name}': layer '{layer.name}' changes the image size")
        if layer.name == layer_name:
            return [(start, step, n) for (start, step), n in zip(geometry, n_out)]
    raise ValueError(f"model '{net.name}' has no layer '{layer_name}'")


def placement(start: float, step: float, cells: int, size: int = SIZE) -> np.ndarray:
    """(size, cells) bilinear weights that draw cell j's value centred on pixel start + step*j.

    Zero beyond half a step outside the outer cells: no cell's evidence is
    centred there. With start 3.5, step 8 and 6 cells this is exactly
    ``tf.image.resize``'s pixel-centre bilinear upsampling from 6 to 48.
    """
    where = (np.arange(size) - start) / step  # each pixel's position in cells
    inside = (where >= -0.5) & (where <= cells - 0.5)
    where = np.clip(where, 0, cells - 1)
    low = np.floor(where).astype(int)
    high = np.minimum(low + 1, cells - 1)
    weights = np.zeros((size, cells), np.float32)
    np.add.at(weights, (np.arange(size), low), 1 - (where - low))
    np.add.at(weights, (np.arange(size), high), where - low)
    return weights * inside[:, None]


def _cam_function(net: keras.Model, layer_name: str, score: Score, weighting: Weighting) -> Callable[[np.ndarray, np.ndarray], tf.Tensor]:
    features_and_score = keras.Model(net.input, [net.get_layer(layer_name).output, score_tensor(net, score)])
    rows, cols = (tf.constant(placement(*axis)) for axis in cell_centres(net, layer_name))  # (48,h), (48,w)

    @tf.function(input_signature=[FACES_SPEC, CLASSES_SPEC])
    def cam(faces: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:  # (B,48,48,1), (B,) -> (B,48,48)
        with tf.GradientTape() as tape:
            raw, scores = features_and_score(faces, training=False)  # (B,h,w,C), (B,7)
            picked = tf.gather(tf.cast(scores, tf.float32), targets, batch_dims=1)  # (B,)
        # The gradient is taken at the layer's own output (bfloat16 in a mixed-precision
        # model): a float32 copy made inside the tape is not on the path to the score.
        grads = tf.cast(tape.gradient(picked, raw), tf.float32)  # (B,h,w,C)
        features = tf.cast(raw, tf.float32)
        weights = weighting(grads, features)  # (B,1,1,C): each filter's importance
        heat = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))  # (B,h,w)
        return tf.einsum("ph,bhw,qw->bpq", rows, heat, cols)

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
