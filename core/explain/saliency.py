"""Vanilla gradient saliency (Simonyan et al. 2014)."""

from __future__ import annotations

import numpy as np

from core.explain.base import Explainer
from core.explain.gradients import score_gradients


class Saliency(Explainer):
    """|d score / d pixel|: the pixels where a tiny change moves the score most.

    Fast (one backward pass) but noisy: the gradient of a ReLU network jumps
    from pixel to pixel, which is what SmoothGrad averages away.
    """

    title = "Saliency"
    description = "Vanilla gradient |d score / d pixel|: where a tiny change moves the score most (fast, noisy)"

    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return np.abs(score_gradients(self.model, self.score, faces, targets)[..., 0])  # (N, 48, 48)
