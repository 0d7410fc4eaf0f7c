"""The one contract every explainer keeps, and what they share.

An explainer answers one question in one shape: *which pixels of this face
drove the score of this class?* ``explain(images, targets)`` takes raw faces
(N, 48, 48) or (N, 48, 48, 1) in 0..255 and one class per face, and returns
(N, 48, 48) float32 maps that are >= 0 and scaled so each map's maximum is 1
(a map with no positive evidence stays all zero). One scale for every method
and face means the dashboard can draw any two maps side by side with one
colour bar, and tests can check any method with the same assertions.

The *score* being explained is a knob of every explainer:

* ``"logit"`` (default): the pre-softmax score, via ``logits_model``. Its
  gradient says what makes *this* class more likely on its own; the softmax's
  gradient also rewards pixels that make the *other* classes less likely and
  vanishes once the model is confident, which makes maps of confident
  predictions look empty.
* ``"softmax"``: the model's output probability.

An ensemble (``core.runs.Run.model``) averages its members' probabilities and
has no ``logits`` layer; its "logit" is ``log`` of the averaged probability.
That is the natural pre-softmax score of a probability vector (its softmax
gives the probabilities back, and it differs from any other choice only by a
per-face constant that no class map depends on).

Explainers never modify the model: a model loaded once is shared by every
browser session. What they build (sub-models that share its layers,
``tf.function`` traces) is cached per model instance in a weak dictionary, so
it lives exactly as long as the model.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Hashable, Literal, TypeVar

import keras
import numpy as np
import tensorflow as tf

from core.data import SIZE

Score = Literal["logit", "softmax"]
SCORES: tuple[str, ...] = ("logit", "softmax")
BATCH = 256  # faces per model call: bounds memory when explaining many faces or noisy copies
TINY_PROB = 1e-30  # floor before log: an underflowed ensemble probability gives a finite score

# Signatures of every compiled function: one trace serves any batch size.
FACES_SPEC = tf.TensorSpec((None, SIZE, SIZE, 1), tf.float32)
CLASSES_SPEC = tf.TensorSpec((None,), tf.int32)

T = TypeVar("T")
_CACHE: "weakref.WeakKeyDictionary[keras.Model, dict[Hashable, object]]" = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def cached(model: keras.Model, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``'s result, made once per (model instance, key).

    Tracing a ``tf.function`` costs about a second and running it a few
    milliseconds, and a dashboard asks one shared model for many maps. The
    lock keeps two sessions from building (and tracing) two copies. What
    ``build`` returns must not hold ``model`` itself (sub-models built from its
    tensors are fine), or the weak key would never be released.
    """
    with _CACHE_LOCK:
        per_model = _CACHE.setdefault(model, {})
        if key not in per_model:
            per_model[key] = build()
        return per_model[key]  # type: ignore[return-value]


def check_score(score: str) -> Score:
    if score not in SCORES:
        raise ValueError(f"unknown score '{score}' (choose one of {', '.join(SCORES)})")
    return score  # type: ignore[return-value]


def has_logits(model: keras.Model) -> bool:
    return any(layer.name == "logits" for layer in model.layers)


def score_tensor(model: keras.Model, score: Score):
    """The symbolic (B, 7) score of ``model`` (see the module docstring)."""
    if check_score(score) == "softmax":
        return model.outputs[0]
    if has_logits(model):
        return model.get_layer("logits").output
    return keras.ops.log(keras.ops.maximum(model.outputs[0], TINY_PROB))  # an ensemble


def score_model(model: keras.Model, score: Score) -> keras.Model:
    """(B, 48, 48, 1) raw faces -> (B, 7) scores; a new graph over the same layers.

    Never ``model`` itself, even for "softmax": the compiled functions that
    call it are cached under ``model`` as a weak key and must not refer back.
    """
    return keras.Model(model.input, score_tensor(model, score))


def layer_model(model: keras.Model, layer_name: str) -> keras.Model:
    """(B, 48, 48, 1) raw faces -> that layer's output; a new graph over the same layers."""
    return keras.Model(model.input, model.get_layer(layer_name).output)


def _forward_function(net: keras.Model) -> Callable[[np.ndarray], tf.Tensor]:
    """A traced forward pass, without ``model.predict``'s per-call set-up (~15% less CPU on small batches)."""
    return tf.function(lambda faces: net(faces, training=False), input_signature=[FACES_SPEC])


def forward_function(model: keras.Model, score: Score) -> Callable[[np.ndarray], tf.Tensor]:
    """The cached traced ``(B, 48, 48, 1) float32 -> (B, 7)`` scores of ``model``."""
    return cached(model, ("forward", score), lambda: _forward_function(score_model(model, score)))


def scores(model: keras.Model, score: Score, faces: np.ndarray) -> np.ndarray:
    """(N, 48, 48[, 1]) raw faces -> (N, 7) float32 scores, BATCH faces per model call (N >= 1)."""
    return in_batches(forward_function(model, check_score(score)), as_faces(faces))


def as_faces(images: np.ndarray) -> np.ndarray:
    """(N, 48, 48) or (N, 48, 48, 1), any number type -> (N, 48, 48, 1) float32."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (SIZE, SIZE, 1):
        raise ValueError(f"images must be (N, 48, 48) or (N, 48, 48, 1), got {np.shape(images)}")
    return x


def normalise(maps: np.ndarray) -> np.ndarray:
    """(N, 48, 48) >= 0 -> the same with each map's maximum at 1; all-zero maps stay zero."""
    peak = maps.max(axis=(1, 2), keepdims=True)  # (N, 1, 1)
    return (maps / np.where(peak > 0, peak, 1.0)).astype(np.float32)


def in_batches(fn: Callable[..., tf.Tensor], *arrays: np.ndarray, size: int = BATCH) -> np.ndarray:
    """``fn`` over aligned arrays BATCH rows at a time, results concatenated along axis 0.

    Never calls ``fn`` on an empty batch (BatchNorm in a traced graph rejects one), so
    callers pass at least one row.
    """
    n = len(arrays[0])
    return np.concatenate([np.asarray(fn(*(a[i : i + size] for a in arrays))) for i in range(0, n, size)])


class Explainer(ABC):
    """``explain(images, targets) -> maps``; see the module docstring for the contract.

    Subclasses take their own knobs as keyword arguments with defaults, set a
    short ``title`` and a one-line ``description`` for the dashboard, and
    implement ``_maps``. ``needs_conv``: the method works only on models with
    convolutional feature maps (it raises ValueError at construction on others).
    """

    title: ClassVar[str]
    description: ClassVar[str]
    needs_conv: ClassVar[bool] = False

    def __init__(self, model: keras.Model, *, score: Score = "logit"):
        self.model = model
        self.score = check_score(score)

    def explain(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N, 48, 48[, 1]) raw 0..255 faces, (N,) classes -> (N, 48, 48) float32 maps in 0..1."""
        x = as_faces(images)
        t = np.asarray(targets).reshape(-1)
        n_classes = int(self.model.outputs[0].shape[-1])
        if len(t) != len(x):
            raise ValueError(f"{len(x)} images but {len(t)} targets")
        if len(t) and (not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= n_classes):
            raise ValueError(f"targets must be class indices in 0..{n_classes - 1}, got {t}")
        if not len(x):
            return np.zeros((0, SIZE, SIZE), np.float32)
        return normalise(self._maps(x, t.astype(np.int32)))

    @abstractmethod
    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N, 48, 48, 1) float32, (N,) int32 -> (N, 48, 48) non-negative, any scale."""
