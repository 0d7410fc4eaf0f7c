"""Integrated Gradients (Sundararajan et al. 2017): the gradient summed along a path from a baseline."""

from __future__ import annotations

import keras
import numpy as np

from core.explain.base import Explainer, Score, as_faces
from core.explain.gradients import score_gradients


def integrated_gradients(
    model: keras.Model, score: Score, faces: np.ndarray, targets: np.ndarray, baseline: float = 0.0, steps: int = 32
) -> np.ndarray:
    """(N, 48, 48[, 1]) raw faces, (N,) classes -> (N, 48, 48) signed attributions.

    ``(face - baseline) x`` the mean gradient at ``steps`` points of the
    straight path from the baseline image (every pixel ``baseline``) to the
    face, taken at the midpoints of ``steps`` equal segments (the midpoint
    Riemann sum). Completeness, the method's axiom: the attributions add up
    to ``score(face) - score(baseline)``, exactly for a linear score and up to
    the sum's error otherwise; tests/test_explain.py checks both.
    """
    if steps < 1:
        raise ValueError(f"need steps >= 1, got {steps}")
    x = as_faces(faces)  # (N, 48, 48, 1)
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)  # (S,)
    path = baseline + alphas[None, :, None, None, None] * (x[:, None] - baseline)  # (N, S, 48, 48, 1)
    grads = score_gradients(model, score, path.reshape(-1, *x.shape[1:]), np.repeat(np.asarray(targets, np.int32), steps))
    mean_grad = grads.reshape(len(x), steps, *x.shape[1:]).mean(axis=1)  # (N, 48, 48, 1)
    return ((x - baseline) * mean_grad)[..., 0]


class IntegratedGradients(Explainer):
    """The positive part of Integrated Gradients from a black face.

    Unlike a plain gradient, an attribution here has a sign with a meaning
    (this pixel, against the baseline, raised or lowered the score), so the
    map keeps the evidence *for* the class, as LIME's and Grad-CAM's do. The
    default black baseline gives pixels that are black in the face no
    attribution at all (a known blind spot: dark hair, pupils); ``baseline``
    sets another grey level.
    """

    title = "Integrated Gradients"
    description = "Integrated Gradients: the gradient summed along a path from a black face (evidence for the class)"

    def __init__(self, model: keras.Model, *, score: Score = "logit", steps: int = 32, baseline: float = 0.0):
        super().__init__(model, score=score)
        if steps < 1 or not 0 <= baseline <= 255:
            raise ValueError(f"need steps >= 1 and a baseline grey level in 0..255, got {steps} and {baseline}")
        self.steps, self.baseline = steps, float(baseline)

    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        attributions = integrated_gradients(self.model, self.score, faces, targets, self.baseline, self.steps)
        return np.maximum(attributions, 0.0)  # (N, 48, 48)
