"""Integrated Gradients (Sundararajan et al. 2017): the gradient summed along a path from a baseline."""

from __future__ import annotations

import keras
import numpy as np

from core.data import SIZE
from core.explain.base import Explainer, Score, as_faces
from core.explain.gradients import score_gradients
from core.explain.trust import baseline_image


def integrated_gradients(
    model: keras.Model, score: Score, faces: np.ndarray, targets: np.ndarray, baselines: np.ndarray, steps: int = 32
) -> np.ndarray:
    """(N, 48, 48[, 1]) raw faces, (N,) classes, (N, 48, 48[, 1]) baseline images -> (N, 48, 48) signed attributions.

    ``(face - baseline) x`` the mean gradient at ``steps`` points of the
    straight path from the baseline image to the face, taken at the
    midpoints of ``steps`` equal segments (the midpoint Riemann sum).
    Completeness, the method's axiom: the attributions add up to
    ``score(face) - score(baseline)``, exactly for a linear score and up to
    the sum's error otherwise; tests/test_explain.py checks both.
    """
    if steps < 1:
        raise ValueError(f"need steps >= 1, got {steps}")
    x, x0 = as_faces(faces), as_faces(baselines)  # (N, 48, 48, 1) each
    if x0.shape != x.shape:
        raise ValueError(f"need one baseline image per face, got {len(x0)} for {len(x)}")
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)[None, :, None, None, None]  # (1, S, 1, 1, 1)
    path = x0[:, None] + alphas * (x - x0)[:, None]  # (N, S, 48, 48, 1)
    grads = score_gradients(model, score, path.reshape(-1, *x.shape[1:]), np.repeat(np.asarray(targets, np.int32), steps))
    mean_grad = grads.reshape(len(x), steps, *x.shape[1:]).mean(axis=1)  # (N, 48, 48, 1)
    return ((x - x0) * mean_grad)[..., 0]


class IntegratedGradients(Explainer):
    """The positive part of Integrated Gradients from a featureless face.

    Unlike a plain gradient, an attribution here has a sign with a meaning
    (this pixel, against the baseline, raised or lowered the score), so the
    map keeps the evidence *for* the class, as LIME's and Grad-CAM's do.
    The baseline is the question being asked: ``"mean"`` (default), the
    face's own mean grey, the same "nothing to see" image the deletion and
    insertion curves of ``core.explain.trust`` fill in; ``"black"`` (the
    paper's choice for photos), which gives pixels that are dark in the face
    no attribution at all and, measured on the demo model, orders pixels no
    better than chance under the mean-grey curves; ``"blur"``; or a grey level.
    """

    title = "Integrated Gradients"
    description = "Integrated Gradients: the gradient summed along a path from a featureless grey face (evidence for the class)"

    def __init__(self, model: keras.Model, *, score: Score = "logit", steps: int = 32, baseline: str | float = "mean"):
        super().__init__(model, score=score)
        if steps < 1:
            raise ValueError(f"need steps >= 1, got {steps}")
        baseline_image(np.zeros((SIZE, SIZE)), baseline)  # refuse a bad name now, not at the first map
        self.steps, self.baseline = steps, baseline

    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        baselines = np.stack([baseline_image(face, self.baseline) for face in faces])  # (N, 48, 48)
        attributions = integrated_gradients(self.model, self.score, faces, targets, baselines, self.steps)
        return np.maximum(attributions, 0.0)  # (N, 48, 48)
