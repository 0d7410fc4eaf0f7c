"""LIME (Ribeiro et al. 2016) with superpixels that fit a 48x48 grey face.

lime's default segmentation (quickshift, tuned for colour photographs) cuts a
48x48 grey face into 2-3 regions, which can only say "the face" or "the
background". SLIC on the grey levels with ~60 requested segments gives ~50
regions of ~45 px, about one per brow, eye or mouth corner, and with
compactness 0.1 (grey levels scaled to 0..1) their edges still follow strong
edges such as the head outline and the mouth. A hidden superpixel is painted
with the face's mean grey level, not with its own mean (lime's default): an
expression lives in the dark strokes of brows, eyes and mouth, and a region's
own mean leaves a dark blob where its stroke was.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from lime import lime_image
from skimage.segmentation import slic

from core.explain.base import BATCH, Explainer, Score, forward_function


def segment_face(face: np.ndarray, n_segments: int = 60, compactness: float = 0.1, sigma: float = 1.0) -> np.ndarray:
    """(48, 48) grey 0..255 -> (48, 48) int32 superpixel labels 0..S-1, S ~ 0.8 x n_segments.

    ``sigma`` smooths sensor noise before clustering, so regions follow the
    face's edges instead of its grain. Labels are made contiguous because lime
    uses a superpixel's label as its column in the perturbation matrix.
    """
    labels = slic(np.asarray(face, np.float64) / 255.0, n_segments=n_segments, compactness=compactness,
                  sigma=sigma, channel_axis=None, start_label=0)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)


class _VectorisedLime(lime_image.LimeImageExplainer):
    """lime's explainer with its perturbation step vectorised.

    lime 0.2.0.1 builds the perturbed faces one at a time in Python behind a
    tqdm bar (~0.4 s for 1000 samples, and a progress bar in the server log).
    This draws the same on/off matrix from the same random state, so the
    explanation is identical; tests/test_explain.py checks it against lime's.
    """

    def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
        """(H, W, 3) face and its hidden version -> ((S, n_segments) 0/1 samples, (S, 7) scores)."""
        n_features = np.unique(segments).shape[0]
        data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1  # lime's first sample is the face itself
        scores = []
        for start in range(0, num_samples, batch_size):
            keep = data[start : start + batch_size][:, segments].astype(bool)  # (b, H, W): superpixel shown?
            scores.append(classifier_fn(np.where(keep[..., None], image, fudged_image)))  # (b, H, W, 3) -> (b, 7)
        return data, np.concatenate(scores)


class Lime(Explainer):
    """Positive LIME weights of the target class, painted on their superpixels.

    For each face, ``n_samples`` copies with random superpixels hidden go
    through the model in batches, and a locally weighted ridge regression of
    the target's score on the on/off pattern gives each superpixel a weight.
    Only weights > 0 (superpixels whose presence raises the score) are drawn.
    Each face uses a fresh random state from ``random_state``, so a face's map
    does not depend on the other faces in the call. ``n_segments`` is what
    SLIC is asked for (it returns ~0.8x that); ``fill`` is the grey level
    painted over a hidden superpixel (None: the face's mean; the module docstring says why).
    """

    title = "LIME"
    description = "LIME: hides random superpixels (~50 SLIC regions), fits a linear model of the score (slow)"

    def __init__(
        self,
        model: keras.Model,
        *,
        score: Score = "logit",
        n_samples: int = 1000,
        n_segments: int = 60,
        random_state: int = 0,
        fill: float | None = None,
    ):
        super().__init__(model, score=score)
        if n_samples < 2:
            raise ValueError(f"LIME needs n_samples >= 2 to fit anything, got {n_samples}")
        self.n_samples, self.n_segments, self.random_state, self.fill = n_samples, n_segments, random_state, fill

    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        model, score = self.model, self.score
        forward = forward_function(model, score)

        def classifier(rgb: np.ndarray) -> np.ndarray:  # (b, 48, 48, 3) float64 -> (b, 7)
            return forward(rgb[..., :1].astype(np.float32)).numpy()

        return np.stack([self._map(face[..., 0], int(target), classifier) for face, target in zip(faces, targets)])

    def _map(self, face: np.ndarray, target: int, classifier: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """(48, 48) face -> (48, 48) positive superpixel weights."""
        segments = segment_face(face, self.n_segments)
        explanation = _VectorisedLime(random_state=self.random_state).explain_instance(
            face.astype(np.float64),
            classifier,
            labels=(target,),
            top_labels=None,
            hide_color=float(face.mean()) if self.fill is None else self.fill,
            num_samples=self.n_samples,
            batch_size=BATCH,
            segmentation_fn=lambda _: segments,
        )
        weights = np.zeros(segments.max() + 1)
        for segment, weight in explanation.local_exp[target]:
            weights[segment] = weight
        return np.maximum(weights, 0)[segments]
