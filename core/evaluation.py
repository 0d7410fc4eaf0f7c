"""Predictions, test-time augmentation, ensemble rules and the metrics we report."""

from __future__ import annotations

import cv2
import keras
import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from core.data import EMOTIONS
from core.models import Augment

ENSEMBLE_RULES = ("average", "vote", "weighted")


TTA_MODES = ("none", "flip", "shifts", "rotate-zoom")
TTA_SHIFT = 4  # px: the shift views' step, chosen on ferlab's validation split (1-4 px all gained 0.2-0.7 points over flip)
# rotate-zoom views sit at the training augmentation's own extremes (Augment's defaults):
# faces the nets have seen, not new distortions.
TTA_ROTATION = Augment.rotation_deg  # degrees
TTA_ZOOM = Augment.zoom  # a fraction: zoom in and out by it


def tta_views(x: np.ndarray, mode: str) -> list[np.ndarray]:
    """(N, 48, 48, 1) faces -> the views whose predictions test-time augmentation averages.

    flip: the face and its mirror (an expression does not change under a
    horizontal flip). shifts: those two and the face moved ``TTA_SHIFT`` px
    up, down, left and right, each mirrored too: 10 views. rotate-zoom: the
    face, turned by -/+``TTA_ROTATION`` degrees and zoomed by 1 -/+ ``TTA_ZOOM``
    about its centre, each mirrored too: 10 views. Edge pixels fill the border,
    as in the training augmentation (fill_mode "nearest").
    """
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation '{mode}' (choose one of {', '.join(TTA_MODES)})")
    views = [x]
    if mode == "shifts":
        s, size = TTA_SHIFT, x.shape[1]
        padded = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")  # (N, 48 + 2s, 48 + 2s, 1)
        for dy, dx in ((-s, 0), (s, 0), (0, -s), (0, s)):
            views.append(padded[:, s + dy : s + dy + size, s + dx : s + dx + size])
    if mode == "rotate-zoom":
        for degrees, scale in ((-TTA_ROTATION, 1.0), (TTA_ROTATION, 1.0), (0.0, 1 - TTA_ZOOM), (0.0, 1 + TTA_ZOOM)):
            views.append(_warp(x, degrees, scale))
    if mode != "none":
        views += [v[:, :, ::-1] for v in views]
    return views


def _warp(x: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    """(N, H, W, 1) faces turned anticlockwise by ``degrees`` and scaled by ``scale`` about
    their centre (bilinear, edge pixels fill the border)."""
    h, w = x.shape[1:3]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, scale)  # (2, 3)
    warped = np.empty_like(x)
    for i, face in enumerate(x):
        warped[i, ..., 0] = cv2.warpAffine(face[..., 0], matrix, (w, h), flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_REPLICATE)
    return warped


def predict_probs(model: keras.Model, images: np.ndarray, tta: str = "none", batch_size: int = 256) -> np.ndarray:
    """(N, 7) class probabilities for (N, 48, 48) uint8 faces, averaged over the ``tta`` views."""
    x = images[..., None].astype(np.float32)  # (N, 48, 48, 1)
    views = tta_views(x, tta)
    probs = sum(model.predict(v, batch_size=batch_size, verbose=0) for v in views) / len(views)
    return probs.astype(np.float32)


def combine(member_probs: list[np.ndarray], rule: str, weights: list[float] | None = None) -> np.ndarray:
    """(N, 7) ensemble scores from each member's (N, 7) probabilities.

    average: mean probability. vote: share of members whose top class it is
    (ties broken by the mean probability, so the result is still a ranking).
    weighted: probabilities weighted by each member's validation accuracy.
    """
    stack = np.stack(member_probs)  # (M, N, 7)
    mean = stack.mean(axis=0)
    if rule == "average":
        return mean
    if rule == "vote":
        votes = np.eye(stack.shape[-1])[stack.argmax(-1)].mean(axis=0)  # (N, 7)
        return votes + 1e-6 * mean
    if rule == "weighted":
        if weights is None:
            raise ValueError("the weighted rule needs one weight per member")
        w = np.asarray(weights, dtype=np.float64)
        return np.tensordot(w / w.sum(), stack, axes=1)
    raise ValueError(f"unknown ensemble rule '{rule}' (choose from {', '.join(ENSEMBLE_RULES)})")


def forward_select(member_probs: list[np.ndarray], y_true: np.ndarray) -> list[int]:
    """Indices of the members whose average is chosen by greedy forward selection
    on the labelled faces ``y_true`` (Caruana et al., 2004, without repeats).

    Start from the most accurate member; add the one whose joining raises the
    average's accuracy most; stop when none raises it. Why: a strong model
    averaged with many weaker ones of one kind is outvoted (FER Lab's 4.7M-param
    CNN among six 1.2M ones), and a few *different* members beat many alike. Pass
    validation probabilities, never test ones: the choice fits the faces it is made on.
    """
    def accuracy(indices: list[int]) -> float:
        return float((np.mean([member_probs[i] for i in indices], axis=0).argmax(1) == y_true).mean())

    chosen = [int(np.argmax([accuracy([i]) for i in range(len(member_probs))]))]  # ties: the first listed
    best = accuracy(chosen)
    while True:
        left = [i for i in range(len(member_probs)) if i not in chosen]
        gains = [accuracy(chosen + [i]) for i in left]
        if not left or max(gains) <= best:
            break
        chosen.append(left[int(np.argmax(gains))])
        best = max(gains)
    return chosen


def metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix (rows: true)."""
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(EMOTIONS)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "n": int(len(y_true)),
        "per_class": {
            EMOTIONS[i]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i in labels
        },
        "macro_f1": float(f1.mean()),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
