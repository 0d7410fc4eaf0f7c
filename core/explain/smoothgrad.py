"""SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the face."""

from __future__ import annotations

import keras
import numpy as np

from core.data import SIZE
from core.explain.base import Explainer, Score
from core.explain.gradients import score_gradients


class SmoothGrad(Explainer):
    """|mean over noisy copies of d score / d pixel|.

    The signed gradients are averaged before the absolute value, as in the
    paper: sign flips caused by the noise cancel, and what is left is the
    gradient of the score smoothed over a neighbourhood of the face.
    ``noise`` is the noise's standard deviation as a fraction of the 0..255
    range (the paper finds 10-20% best). With ``n_samples=1`` and ``noise=0``
    this is exactly ``Saliency``.
    """

    title = "SmoothGrad"
    description = "SmoothGrad: the gradient averaged over noisy copies of the face (cleaner than saliency, n x slower)"

    def __init__(
        self,
        model: keras.Model,
        *,
        score: Score = "logit",
        n_samples: int = 20,
        noise: float = 0.15,
        random_state: int = 0,
    ):
        super().__init__(model, score=score)
        if n_samples < 1 or noise < 0:
            raise ValueError(f"need n_samples >= 1 and noise >= 0, got {n_samples} and {noise}")
        self.n_samples, self.noise, self.random_state = n_samples, noise, random_state

    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        n, k = len(faces), self.n_samples
        # Every face gets the same k draws, so a face's map does not depend on
        # which faces share its batch (the Explain page and Trust agree).
        rng = np.random.default_rng(self.random_state)
        jitter = rng.standard_normal((k, SIZE, SIZE, 1), dtype=np.float32) * np.float32(self.noise * 255)
        noisy = (faces[:, None] + jitter[None]).reshape(n * k, SIZE, SIZE, 1)  # face-major: copies of a face are adjacent
        grads = score_gradients(self.model, self.score, noisy, np.repeat(targets, k))  # (N*k, 48, 48, 1)
        return np.abs(grads.reshape(n, k, SIZE, SIZE).mean(axis=1))  # (N, 48, 48)
