"""Can an explanation be trusted? Three checks, each a small function over the explainer contract.

* **Faithfulness** (``deletion_insertion``; Petsiuk et al. 2018, RISE): remove
  the pixels a map calls most important first and watch the target's
  probability fall (deletion), or reveal them first on a featureless baseline
  and watch it rise (insertion). A faithful map gives a low deletion and a
  high insertion area under the curve; the same curves for random pixel
  orders are the level any map must beat.
* **Sensitivity to the model** (``sanity_check``; Adebayo et al. 2018,
  "Sanity checks for saliency maps"): re-initialise the model's layers from
  the output down, one more each time, and compare each map with the
  original. A method whose map barely changes when the model is destroyed
  shows the face (an edge detector), not what the model learnt.
* **Ground truth** (``ground_truth_mass``): on the demo set the expression
  lives only in brows, eyes and mouth (``core.demo``'s ``masks``), so a map
  should put more of its mass there than the mask's share of the image, and
  its peak should point into the mask (the pointing game, Zhang et al. 2016).

Why not a library: Quantus 0.6.0 (its core needs only numpy and friends) runs
TensorFlow models through its ``tensorflow`` extra, which pins
``tensorflow<2.16``, ``keras<3`` and ``numpy<2``; Xplique 2.0.2 requires
``tensorflow<=2.20``, ``scipy<=1.15.3`` and ``scikit-image<=0.25.2``. Neither
fits beside our pinned TensorFlow 2.21 / Keras 3.15 / scipy 1.17 /
scikit-image 0.26 (checked from their wheels' metadata), so the metrics are
written here, each against hand-computed cases in tests/test_trust.py.

All functions take raw 0..255 faces and never modify the model they are given.
"""

from __future__ import annotations

from typing import Any

import cv2
import keras
import numpy as np
from scipy.ndimage import binary_dilation
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from core.data import SIZE
from core.explain.base import Explainer, as_faces, scores

PASS_SPEARMAN = 0.5  # ``passes``: the map of the fully randomised model must rank-correlate below this
BLUR_SIGMA = 5.0  # px: the "blur" baseline keeps the head's shading but no brow, eye or mouth stroke


# -------------------------------------------------------------- faithfulness


def auc(curve: np.ndarray) -> float:
    """Trapezoid area under ``curve`` sampled at evenly spaced x from 0 to 1 (len >= 2)."""
    y = np.asarray(curve, np.float64)
    if y.ndim != 1 or len(y) < 2:
        raise ValueError(f"a curve needs at least 2 points, got shape {y.shape}")
    return float(np.sum((y[1:] + y[:-1]) / 2) / (len(y) - 1))


def baseline_image(face: np.ndarray, baseline: str | float = "mean") -> np.ndarray:
    """(48, 48) raw face -> (48, 48) float32 "nothing to see" image.

    ``"mean"``: the face's mean grey everywhere; ``"blur"``: the face blurred
    with a Gaussian of ``BLUR_SIGMA`` px; ``"black"``: 0; a number: that grey level.
    """
    face = np.asarray(face, np.float32).reshape(SIZE, SIZE)
    if isinstance(baseline, str):
        if baseline == "mean":
            return np.full_like(face, face.mean())
        if baseline == "black":
            return np.zeros_like(face)
        if baseline == "blur":
            return cv2.GaussianBlur(face, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)
        raise ValueError(f"unknown baseline '{baseline}' (choose mean, blur, black or a grey level)")
    return np.full_like(face, float(baseline))


def ranking(saliency_map: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(48, 48) map -> (2304,) flat pixel indices, most important first; ties in a random (seeded) order."""
    values = np.asarray(saliency_map, np.float64).reshape(-1)
    shuffled = rng.permutation(values.size)
    return shuffled[np.argsort(-values[shuffled], kind="stable")]


def _curve_images(face: np.ndarray, base: np.ndarray, order: np.ndarray, steps: int) -> np.ndarray:
    """(2, steps + 1, 48, 48): deletion images (face -> base) then insertion images (base -> face)."""
    counts = np.rint(np.linspace(0, order.size, steps + 1)).astype(int)
    rank = np.empty(order.size, int)
    rank[order] = np.arange(order.size)  # pixel -> its position in the order
    changed = rank[None, :] < counts[:, None]  # (steps + 1, 2304): already removed / revealed at this step
    changed = changed.reshape(-1, SIZE, SIZE)
    deletion = np.where(changed, base, face)
    insertion = np.where(changed, face, base)
    return np.stack([deletion, insertion])


def deletion_insertion(
    model: keras.Model,
    face: np.ndarray,
    target: int,
    saliency_map: np.ndarray,
    steps: int = 20,
    baseline: str | float = "mean",
    n_random: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Deletion and insertion curves of ``saliency_map`` and of random orders, with their AUCs.

    Pixels are ranked by the map (ties at random). At step k of ``steps``, the
    first round(k / steps x 2304) of them are replaced by ``baseline_image``
    (deletion) or, starting from it, put back (insertion), and the curve is the
    model's probability of ``target``. x runs from 0 (nothing changed) to 1
    (every pixel changed), so both curves end where the other starts. The
    random baseline averages ``n_random`` seeded random orders. Every image
    (2 x (steps + 1) x (1 + n_random), 210 by default) goes through the model
    in one batch.

    Returned: ``fractions`` (steps + 1,), ``deletion``, ``insertion``,
    ``random_deletion``, ``random_insertion`` curves, each ``*_auc``, and
    ``gain = (random_deletion_auc - deletion_auc) + (insertion_auc - random_insertion_auc)``:
    how much probability-area the map's order gains over a random order,
    in -2..2; > 0 means the map knows better than chance which pixels matter.
    """
    if steps < 1 or n_random < 1:
        raise ValueError(f"need steps >= 1 and n_random >= 1, got {steps}, {n_random}")
    face = as_faces(np.asarray(face)[None])[0, ..., 0]  # (48, 48) float32
    if np.shape(saliency_map) != (SIZE, SIZE):
        raise ValueError(f"saliency_map must be (48, 48), got {np.shape(saliency_map)}")
    rng = np.random.default_rng(seed)
    base = baseline_image(face, baseline)
    orders = [ranking(saliency_map, rng)] + [rng.permutation(SIZE * SIZE) for _ in range(n_random)]
    images = np.stack([_curve_images(face, base, order, steps) for order in orders])  # (R, 2, S + 1, 48, 48)
    probs = scores(model, "softmax", images.reshape(-1, SIZE, SIZE))[:, int(target)]
    curves = probs.reshape(len(orders), 2, steps + 1).astype(np.float64)
    result: dict[str, Any] = {
        "fractions": np.linspace(0.0, 1.0, steps + 1),
        "deletion": curves[0, 0],
        "insertion": curves[0, 1],
        "random_deletion": curves[1:, 0].mean(axis=0),
        "random_insertion": curves[1:, 1].mean(axis=0),
    }
    for name in ("deletion", "insertion", "random_deletion", "random_insertion"):
        result[f"{name}_auc"] = auc(result[name])
    result["gain"] = (result["random_deletion_auc"] - result["deletion_auc"]) + (
        result["insertion_auc"] - result["random_insertion_auc"]
    )
    return result


# ------------------------------------------------------- model randomisation


def _fresh_weights(layer: keras.layers.Layer, seed: int) -> list[np.ndarray] | None:
    """New values for each of the layer's weights from its own initialisers (seeded); None if one has none."""
    values = []
    for i, variable in enumerate(layer.weights):
        initializer = getattr(layer, f"{variable.name}_initializer", None)
        if initializer is None:
            return None
        config = keras.initializers.serialize(initializer)
        if isinstance(config, dict) and "seed" in config.get("config", {}):
            config["config"]["seed"] = seed * 1000 + i
        values.append(np.asarray(keras.initializers.deserialize(config)(tuple(variable.shape), dtype=variable.dtype)))
    return values


def _randomise(layer: keras.layers.Layer, seed: int) -> None:
    """Re-initialise ``layer`` (of a copy!): its initialisers where known, else its weights shuffled."""
    values = _fresh_weights(layer, seed)
    if values is None:
        rng = np.random.default_rng(seed)
        values = [rng.permutation(w.reshape(-1)).reshape(w.shape) for w in layer.get_weights()]
    layer.set_weights(values)


def randomisable_layers(model: keras.Model) -> list[str]:
    """Layers with trainable weights, output first: the order of the cascade.

    The input normaliser holds only fixed statistics of the data and is
    left alone, as in Adebayo et al., who randomise what training learnt.
    Nested models (ensemble members) are not entered: each counts as one layer.
    """
    return [layer.name for layer in reversed(model.layers) if layer.trainable_weights]


def _similarity(original: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(Spearman, SSIM) of two (48, 48) maps in 0..1.

    Spearman of a constant map is undefined: it is taken as 1 when both maps
    are the same constant and 0 otherwise (a map gone flat has lost the
    original's ranking).
    """
    a, b = original.reshape(-1), other.reshape(-1)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        rho = 1.0 if np.array_equal(a, b) else 0.0
    else:
        rho = float(spearmanr(a, b).statistic)
    ssim = float(structural_similarity(original.astype(np.float64), other.astype(np.float64), data_range=1.0))
    return rho, ssim


def sanity_check(
    model: keras.Model, explainer_cls: type[Explainer], face: np.ndarray, target: int, *, seed: int = 0, **knobs
) -> list[dict[str, Any]]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) of one face's map.

    On a copy of ``model`` (``clone_model`` + ``set_weights``: the original,
    possibly shared by every dashboard session, is never touched), the layers
    of ``randomisable_layers`` are re-initialised one more at a time from the
    output towards the input, and ``explainer_cls(copy, **knobs)`` maps the face
    again after each. One row per step: ``layer`` (the layer just
    randomised; all above it are random too), ``spearman`` (rank correlation
    with the original map), ``ssim`` (structural similarity, data_range 1)
    and the ``map`` itself. The copy is built once, so each explainer's
    traced functions are built once too and read the new weights.
    """
    x = as_faces(np.asarray(face)[None])
    targets = np.array([int(target)])
    original = explainer_cls(model, **knobs).explain(x, targets)[0]
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    results = []
    for step, name in enumerate(randomisable_layers(copy)):
        _randomise(copy.get_layer(name), seed * 100 + step)
        cascade_map = explainer_cls(copy, **knobs).explain(x, targets)[0]
        rho, ssim = _similarity(original, cascade_map)
        results.append({"layer": name, "spearman": rho, "ssim": ssim, "map": cascade_map})
    return results


def passes(results: list[dict[str, Any]], threshold: float = PASS_SPEARMAN) -> bool:
    """Whether the method passes the sanity check: with every layer random, Spearman < ``threshold``.

    0.5 is our choice, not Adebayo et al.'s (they show curves): a map still
    rank-correlated above 0.5 with the trained model's map after the whole
    model was re-initialised says more about the face than about the model.
    """
    if not results:
        raise ValueError("no layers were randomised")
    return bool(results[-1]["spearman"] < threshold)


# --------------------------------------------------------------- ground truth


def ground_truth_mass(maps: np.ndarray, masks: np.ndarray, tolerance: int = 1) -> dict[str, Any]:
    """How much of each map lies on its ground-truth mask, against the level of a random map.

    ``maps`` (N, 48, 48) >= 0 (or one (48, 48)); ``masks`` the same shape, bool.
    Per face: ``mass`` = the map's sum inside the mask / its total (0 for an
    all-zero map); ``random_mass`` = the mask's share of the image, what a
    uniform map scores. ``hits``: the map's (first) maximum lies in the mask
    grown by ``tolerance`` px (8-connected); ``random_hits_level``: the grown
    mask's share, what a random peak scores. Means over faces: ``mean_mass``,
    ``mean_random_mass``, ``mass_ratio`` (their quotient; > 1 beats chance),
    ``pointing`` (hit rate), ``pointing_random``.
    """
    maps = np.asarray(maps, np.float64)
    masks = np.asarray(masks, bool)
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be (N, H, W), got {maps.shape} and {masks.shape}")
    if (maps < 0).any():
        raise ValueError("maps must be >= 0")
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    mass = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    random_mass = masks.mean(axis=(1, 2))
    grown = masks
    if tolerance > 0:
        grown = np.stack([binary_dilation(m, np.ones((3, 3), bool), iterations=tolerance) for m in masks])
    flat = maps.reshape(len(maps), -1)
    peaks = flat.argmax(axis=1)
    hits = grown.reshape(len(maps), -1)[np.arange(len(maps)), peaks] & (total > 0)
    return {
        "mass": mass,
        "random_mass": random_mass,
        "hits": hits,
        "mean_mass": float(mass.mean()),
        "mean_random_mass": float(random_mass.mean()),
        "mass_ratio": float(mass.mean() / random_mass.mean()) if random_mass.mean() > 0 else float("nan"),
        "pointing": float(hits.mean()),
        "pointing_random": float(grown.mean()),
    }
