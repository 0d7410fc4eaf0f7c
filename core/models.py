"""Model builders: the reference reports' CNNs, our own CNN, and a size-matched DNN.

Every model takes raw grey 48x48x1 faces in 0..255. Augmentation (active only
while training) and normalisation are layers inside the model, so a saved
``.keras`` file is all anyone needs to predict; a finished run publishes its
``inference_model`` (normaliser kept, augmentation dropped). Every model ends in a float32
``logits`` Dense layer followed by a ``probs`` softmax, so explainers can take
the logits as ``keras.Model(model.inputs, model.get_layer("logits").output)``
without modifying a (possibly shared) model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Callable

import keras
import numpy as np
from keras import layers

from core.data import EMOTIONS, SIZE

N_CLASSES = len(EMOTIONS)
DEFAULT_CNN = "ferlab"


def drop_later_defaults(d: dict, later: dict) -> dict:
    """``d`` without the ``later`` fields that still hold their default (``later`` maps field to default).

    Configs are hashed into run ids: a field added after runs were shipped is
    left out while at its default, so those runs keep their ids (and stay cache hits).
    """
    return {name: value for name, value in d.items() if name not in later or value != later[name]}


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation; each transform off at 0 / False."""

    rotation_deg: float = 10.0
    zoom: float = 0.1
    shift: float = 0.1
    shear: float = 0.1
    flip: bool = True
    erasing: float = 0.0  # probability of random erasing (Zhong et al. 2017)
    # How the affine layers (rotation, zoom, shift, shear) resample a face. Under
    # JAX, Keras resamples with map_coordinates, linear over height, width *and*
    # channel: 8 gathers a layer, slow for XLA to compile; "nearest" is one.
    interpolation: str = "bilinear"  # bilinear | nearest

    def to_dict(self) -> dict:
        return drop_later_defaults(asdict(self), {"interpolation": "bilinear"})


@dataclass(frozen=True)
class ModelSpec:
    """What to build. ``arch`` is a preset name or ``"dnn"``."""

    arch: str = DEFAULT_CNN
    augment: Augment | None = field(default_factory=Augment)
    normalize: bool = True
    dnn_match: str = DEFAULT_CNN  # the CNN whose trainable-parameter count a DNN matches

    def to_dict(self) -> dict:
        return {**asdict(self), "augment": self.augment.to_dict() if self.augment else None}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        augment = d.get("augment")
        return cls(
            arch=d["arch"],
            augment=Augment(**augment) if augment else None,
            normalize=d.get("normalize", True),
            dnn_match=d.get("dnn_match", DEFAULT_CNN),
        )


# ------------------------------------------------------------------ CNN bodies
# Each body maps a normalised (B, 48, 48, 1) tensor to a (B, F) feature vector.


def _conv_bn(x, filters: int, kernel: int, activation: str | layers.Layer = "relu", name: str = ""):
    """Conv (no bias: BN follows) -> BN -> activation, the VGG-with-BN unit."""
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    act = activation if isinstance(activation, layers.Layer) else layers.Activation(activation)
    return act(x)


def _dense_block(x, units: int, dropout: float, activation: str | layers.Layer, name: str):
    x = layers.Dense(units, use_bias=False, name=f"{name}_dense")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    act = activation if isinstance(activation, layers.Layer) else layers.Activation(activation)
    x = act(x)
    return layers.Dropout(dropout)(x) if dropout else x


def _ferlab(x, widths: tuple[int, ...] = (32, 64, 128, 256)):
    """Our VGG-style CNN: 4 stages x 2 convs, max-pool, GAP.

    Global average pooling instead of big dense layers keeps the default
    (32-256) at ~1.2M parameters, so an epoch of FER2013 takes ~100 s on a
    2-core CPU. Its training accuracy ends level with validation (under-fitting
    under this much augmentation), which is why ``ferlab-wide`` doubles widths.
    """
    for stage, filters in enumerate(widths):  # 48 -> 24 -> 12 -> 6 -> 3
        x = _conv_bn(x, filters, 3, name=f"s{stage}a")
        x = _conv_bn(x, filters, 3, name=f"s{stage}b")
        x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
        x = layers.SpatialDropout2D(0.1 * (stage + 1) / 2)(x)
    x = layers.GlobalAveragePooling2D()(x)  # (B, widths[-1])
    return layers.Dropout(0.4)(x)


def _tiny(x):
    """A ~94k-parameter CNN that learns the demo set in a minute: tests and first start."""
    for stage, filters in enumerate((32, 64, 128)):  # 48 -> 24 -> 12 -> 6
        x = _conv_bn(x, filters, 3, name=f"s{stage}")
        x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D()(x)  # (B, 128)
    return layers.Dropout(0.2)(x)


def _alexnet4(x):
    """Report 1: 4 conv blocks, kernels 5,3,3,3, filters 64-512, activation + BN +
    dropout rising from 0.25, then 2 dense layers (800, 512)."""
    for block, (filters, kernel) in enumerate(((64, 5), (128, 3), (256, 3), (512, 3))):
        x = layers.Conv2D(filters, kernel, padding="same", activation="relu", name=f"b{block}_conv")(x)
        x = layers.BatchNormalization(name=f"b{block}_bn")(x)
        x = layers.MaxPooling2D(name=f"b{block}_pool")(x)  # 48 -> 24 -> 12 -> 6 -> 3
        x = layers.Dropout(0.25 + 0.05 * block)(x)
    x = layers.Flatten()(x)  # (B, 4608)
    x = _dense_block(x, 800, 0.5, "relu", "fc1")
    return _dense_block(x, 512, 0.5, "relu", "fc2")


def _vgg9(x):
    """Report 2: 9 conv layers with BN (3 each at 32/64/128), max-pool + dropout
    after every 3, then 2 dense layers (256, 256) with dropout."""
    for block, filters in enumerate((32, 64, 128)):  # 48 -> 24 -> 12 -> 6
        for i in range(3):
            x = _conv_bn(x, filters, 3, name=f"b{block}c{i}")
        x = layers.MaxPooling2D(name=f"b{block}_pool")(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)  # (B, 4608)
    x = _dense_block(x, 256, 0.5, "relu", "fc1")
    return _dense_block(x, 256, 0.5, "relu", "fc2")


def _vgg6avg(x):
    """Report 3: 3 x (2 conv 3x3 at 32/64/128 + LeakyReLU + BN, average-pool), then
    dense 2048 and 1024 with LeakyReLU + BN + dropout 0.3.

    The report does not give the padding; 'same' in the first block and 'valid'
    after it (48 -> 24 -> 10 -> 3) gives 4.76M trainable parameters, the layout
    nearest its stated 4.88M (all-'valid' gives 3.45M, all-'same' 11.8M).
    """
    for block, filters in enumerate((32, 64, 128)):
        for i in range(2):
            padding = "same" if block == 0 else "valid"
            x = layers.Conv2D(filters, 3, padding=padding, name=f"b{block}c{i}_conv")(x)
            x = layers.LeakyReLU()(x)
            x = layers.BatchNormalization(name=f"b{block}c{i}_bn")(x)
        x = layers.AveragePooling2D(2, name=f"b{block}_pool")(x)  # 48 -> 24 -> 10 -> 3
    x = layers.Flatten()(x)  # (B, 1152)
    x = _dense_block(x, 2048, 0.3, layers.LeakyReLU(), "fc1")
    return _dense_block(x, 1024, 0.3, layers.LeakyReLU(), "fc2")


def _conv5(x):
    """Report 4: conv 64-64 (5x5), 128-512-512 (3x3), LeakyReLU(0.05) + BN, max-pool
    after all but the first, Dropout2d 0.2..0.5, then dense 512-512 (ReLU + BN + 0.5)."""
    plan = ((64, 5, False, 0.2), (64, 5, True, 0.25), (128, 3, True, 0.3), (512, 3, True, 0.4), (512, 3, True, 0.5))
    for block, (filters, kernel, pool, drop) in enumerate(plan):
        x = layers.Conv2D(filters, kernel, padding="same", name=f"b{block}_conv")(x)
        x = layers.LeakyReLU(negative_slope=0.05)(x)
        x = layers.BatchNormalization(name=f"b{block}_bn")(x)
        if pool:
            x = layers.MaxPooling2D(name=f"b{block}_pool")(x)  # 48 -> 24 -> 12 -> 6 -> 3
        x = layers.SpatialDropout2D(drop)(x)
    x = layers.Flatten()(x)  # (B, 4608)
    x = _dense_block(x, 512, 0.5, "relu", "fc1")
    return _dense_block(x, 512, 0.5, "relu", "fc2")


@dataclass(frozen=True)
class Preset:
    body: Callable
    description: str


PRESETS: dict[str, Preset] = {
    "ferlab": Preset(_ferlab, "FER Lab's own: VGG-style BN CNN, 8 convs 32-256, GAP (~1.2M params), CPU-friendly"),
    "ferlab-wide": Preset(
        partial(_ferlab, widths=(64, 128, 256, 512)),
        "ferlab at twice the widths: 8 convs 64-512, GAP (~4.7M params), ~2.5x the time an epoch",
    ),
    "tiny": Preset(_tiny, "Tiny 3-conv CNN (~94k params) for the built-in demo set: trains in about a minute"),
    "alexnet4": Preset(_alexnet4, "Report 1: 4 conv blocks (5,3,3,3) + BN + rising dropout, 2 dense (~5.66M)"),
    "vgg9": Preset(_vgg9, "Report 2: 9 conv layers with BN, pool+dropout every 3, 2 dense (~1.70M)"),
    "vgg6avg": Preset(_vgg6avg, "Report 3: 3x(2 conv LeakyReLU+BN, avg-pool), dense 2048-1024 (~4.88M)"),
    "conv5": Preset(_conv5, "Report 4: conv 64-64(5x5)-128-512-512, LeakyReLU+BN, Dropout2d, dense 512-512 (~5.76M)"),
}


# ------------------------------------------------------------------------ DNN


def _dnn_trainable(widths: list[int]) -> int:
    """Trainable parameters of a DNN: Dense (no bias) + BN (gamma, beta) per hidden layer, then logits."""
    total, fan_in = 0, SIZE * SIZE
    for width in widths:
        total += fan_in * width + 2 * width
        fan_in = width
    return total + fan_in * N_CLASSES + N_CLASSES


def dnn_widths(target_params: int, depth: int = 3) -> list[int]:
    """Hidden widths whose DNN has the trainable-parameter count nearest the target.

    Equal widths first (the widest that stays at or under the target), then the
    last layer's width is tuned alone: one unit there costs only ~width
    parameters, fine enough to land within a fraction of a percent even for
    a 25k-parameter CNN.
    """
    width = 1
    while _dnn_trainable([width + 1] * depth) <= target_params:
        width += 1
    head = [width] * (depth - 1)
    per_unit = (head[-1] if head else SIZE * SIZE) + 2 + N_CLASSES  # in-weights, BN, out-weights
    last = round((target_params - _dnn_trainable(head + [0])) / per_unit)
    return head + [max(last, 1)]


def _dnn_body(widths: list[int]):
    def body(x):
        x = layers.Flatten()(x)  # (B, 2304)
        for i, width in enumerate(widths):
            x = _dense_block(x, width, 0.3, "relu", f"h{i}")
        return x

    return body


# ---------------------------------------------------------------------- build


def _input_stage(spec: ModelSpec, mean: float, std: float):
    """Raw 0..255 input -> (augmented) -> (normalised) tensor, all float32."""
    inputs = keras.Input((SIZE, SIZE, 1), name="face")
    x = inputs
    aug = spec.augment
    if aug is not None:
        f32 = {"dtype": "float32"}
        affine = {**f32, "fill_mode": "nearest", "interpolation": aug.interpolation}
        if aug.flip:
            x = layers.RandomFlip("horizontal", **f32)(x)
        if aug.rotation_deg:
            x = layers.RandomRotation(aug.rotation_deg / 360.0, **affine)(x)
        if aug.zoom:
            x = layers.RandomZoom(aug.zoom, **affine)(x)
        if aug.shift:
            x = layers.RandomTranslation(aug.shift, aug.shift, **affine)(x)
        if aug.shear:
            # (0, s), not s: a plain number is saved as (-s, s), which Keras 3.15
            # then refuses to load. The layer flips the sign at random anyway.
            x = layers.RandomShear((0.0, aug.shear), (0.0, aug.shear), **affine)(x)
        if aug.erasing:
            x = layers.RandomErasing(factor=aug.erasing, value_range=(0, 255), **f32)(x)
    if spec.normalize:
        x = layers.Normalization(mean=mean, variance=std**2, name="normalize", dtype="float32")(x)
    return inputs, x


def build_model(spec: ModelSpec, mean: float = 128.0, std: float = 64.0, policy: str = "float32") -> keras.Model:
    """A fresh, uncompiled model for ``spec``.

    ``mean``/``std`` are the training set's grey-level statistics (baked into the
    Normalization layer). ``policy`` is a Keras dtype policy such as
    ``"mixed_bfloat16"``; the logits and softmax always stay float32.
    """
    if spec.arch == "dnn":
        target = count_params(build_model(ModelSpec(spec.dnn_match, None, spec.normalize)))["trainable"]
        body, name = _dnn_body(dnn_widths(target)), f"dnn_like_{spec.dnn_match}"
    elif spec.arch in PRESETS:
        body, name = PRESETS[spec.arch].body, spec.arch
    else:
        raise ValueError(f"unknown model '{spec.arch}' (choose dnn or one of {', '.join(PRESETS)})")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        inputs, x = _input_stage(spec, mean, std)
        features = body(x)
        logits = layers.Dense(N_CLASSES, name="logits", dtype="float32")(features)
        probs = layers.Activation("softmax", name="probs", dtype="float32")(logits)
        return keras.Model(inputs, probs, name=name)
    finally:
        keras.config.set_dtype_policy(previous)


def input_stats(model: keras.Model) -> tuple[float, float]:
    """(mean, std) baked into a model's normaliser; (128, 64) placeholders if it has none."""
    try:
        config = model.get_layer("normalize").get_config()
    except ValueError:
        return 128.0, 64.0
    mean = float(np.ravel(config["mean"])[0])
    std = float(np.sqrt(np.ravel(config["variance"])[0]))
    return mean, std


def count_params(model: keras.Model) -> dict[str, int]:
    """Trainable and non-trainable (BatchNorm moving statistics, normaliser) counts."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    total = sum(int(w.numpy().size) for w in model.weights)
    return {"trainable": trainable, "non_trainable": total - trainable}


def logits_model(model: keras.Model) -> keras.Model:
    """The same network up to its pre-softmax scores; shares weights, changes nothing."""
    return keras.Model(model.input, model.get_layer("logits").output)


def inference_model(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """The trained weights in a float32 model without augmentation layers.

    Keras' random-augmentation layers default to *training* mode when a model is
    called as ``model(x)`` without ``training=False``, so an explainer or a user
    calling the model directly would get randomly shifted faces. The published
    model therefore keeps only the normaliser; float32 also gives explainers
    full-precision gradients after a bfloat16 training.
    """
    mean, std = input_stats(model)
    return plain_model(spec, mean, std, model.get_weights())


def plain_model(spec: ModelSpec, mean: float, std: float, weights: list[np.ndarray]) -> keras.Model:
    """``spec`` built in float32 without augmentation layers, holding ``weights``:
    what every trained model is served as, whether it comes from a training or from
    packed storage (``core.packing``)."""
    plain = build_model(replace(spec, augment=None), mean=mean, std=std, policy="float32")
    expected = len(plain.get_weights())
    if len(weights) != expected:
        raise ValueError(f"{len(weights)} weight arrays, but a '{spec.arch}' model has {expected}")
    plain.set_weights(weights)  # raises on a shape mismatch, naming the shapes
    return plain


def last_conv_layer(model: keras.Model) -> str | None:
    """Name of the last Conv2D (Grad-CAM's layer); None for a DNN."""
    convs = [layer.name for layer in model.layers if isinstance(layer, layers.Conv2D)]
    return convs[-1] if convs else None


def conv_layers(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if isinstance(layer, layers.Conv2D)]
