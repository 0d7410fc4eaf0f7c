"""Occlusion (Zeiler & Fergus 2014) and occlusion of named face regions.

``Occlusion`` slides a grey patch over the face and asks how much the target's
score drops while the patch hides each pixel: no gradients, so it works the
same on any model, and its answer ("hiding this area lowers the score by
this much") is what the deletion curves of ``core.explain.trust`` measure.

``REGIONS`` is a fixed layout of the aligned 48x48 FER2013 face, built around
the keypoint template measured on FER2013 itself (``core.faces.FER_TEMPLATE``:
eyes at (15.1, 18.6) and (32.6, 18.6), nose (23.9, 28.3), mouth corners
(16.5, 37.0) and (31.2, 37.0), x right and y down, pixel i centred on i). It
is deliberately coarse: FER2013 faces vary by a few pixels around the
template (inter-ocular distance 12.7-20.5 px, 10th-90th percentile), so each
box is a few pixels larger than the feature at the template. The demo faces
(``core.demo``) are drawn a little lower (eyes at y = 21, mouth at 35) and
jittered by up to 4 px, which the boxes mostly, not always, cover.
``cover_regions`` paints whole regions over and ``occlude_regions`` reports
the model's probabilities: "does the prediction survive without the mouth?".
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

import keras
import numpy as np

from core.data import SIZE
from core.explain.base import Explainer, Score, as_faces, scores
from core.faces import FER_TEMPLATE

Box = tuple[int, int, int, int]  # (top, bottom, left, right) rows/columns, half-open like a slice


def _box(cx: float, cy: float, half_w: float, half_h: float) -> Box:
    """The pixels whose centres lie within half_w / half_h of (cx, cy), clipped to the face."""
    top, bottom = int(np.ceil(cy - half_h)), int(np.floor(cy + half_h)) + 1
    left, right = int(np.ceil(cx - half_w)), int(np.floor(cx + half_w)) + 1
    return max(top, 0), min(bottom, SIZE), max(left, 0), min(right, SIZE)


def _regions() -> dict[str, tuple[Box, ...]]:
    (lx, ey), (rx, _) = FER_TEMPLATE["left_eye"], FER_TEMPLATE["right_eye"]
    nx, ny = FER_TEMPLATE["nose"]
    (mlx, my), (mrx, _) = FER_TEMPLATE["mouth_left"], FER_TEMPLATE["mouth_right"]
    mouth_cx, mouth_half_w = (mlx + mrx) / 2, (mrx - mlx) / 2 + 3.0
    return {
        # Eye openings: 11 x 7 px around each eye (an eye is ~7 x 3 px at the template's scale).
        "eyes": (_box(lx, ey, 5.0, 3.0), _box(rx, ey, 5.0, 3.0)),
        # Brows: a 13 x 5 px band 4.5-8.5 px above each eye, where brows sit from frown to raised.
        "brows": (_box(lx, ey - 6.5, 6.0, 2.0), _box(rx, ey - 6.5, 6.0, 2.0)),
        # Nose: between the eyes' lower edge and the mouth's top, 9 px wide.
        "nose": (_box(nx, ny - 2.5, 4.0, 4.5),),
        # Mouth: the corners' span plus 3 px each side, 4 px above and 5 below (an open mouth drops the lip).
        "mouth": (_box(mouth_cx, my + 0.5, mouth_half_w, 4.5),),
    }


REGIONS: Mapping[str, tuple[Box, ...]] = MappingProxyType(_regions())


def region_mask(name: str) -> np.ndarray:
    """(48, 48) bool: the pixels of ``REGIONS[name]``."""
    if name not in REGIONS:
        raise ValueError(f"unknown region '{name}' (choose one of {', '.join(REGIONS)})")
    mask = np.zeros((SIZE, SIZE), bool)
    for top, bottom, left, right in REGIONS[name]:
        mask[top:bottom, left:right] = True
    return mask


def cover_regions(face: np.ndarray, regions: Sequence[str], fill: float | None = None) -> np.ndarray:
    """(48, 48[, 1]) raw face -> (48, 48) float32 copy with ``regions`` painted ``fill`` (None: the face's mean grey).

    The mean grey keeps the face's overall brightness, so what changes is the
    region's *content*, not the exposure (as the trust curves' baseline).
    """
    x = as_faces(np.asarray(face)[None])[0, ..., 0]  # (48, 48)
    covered = x.copy()
    grey = float(x.mean()) if fill is None else float(fill)
    for name in regions:
        covered[region_mask(name)] = grey
    return covered


def occlude_regions(
    model: keras.Model, face: np.ndarray, regions: Sequence[str] = ("eyes", "brows", "mouth"), fill: float | None = None
) -> dict[str, np.ndarray]:
    """{region: (7,) probabilities of ``face`` with that region alone covered (see ``cover_regions``)}.

    ``face`` is one raw (48, 48) or (48, 48, 1) face; all regions go through the model in one call.
    """
    if not regions:
        return {}
    covered = np.stack([cover_regions(face, [name], fill) for name in regions])
    return dict(zip(regions, scores(model, "softmax", covered)))


def patch_starts(patch: int, stride: int, size: int = SIZE) -> list[int]:
    """Top-left offsets of the patches along one axis, the last flush with the edge so every pixel is covered."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


class Occlusion(Explainer):
    """How much the target's score drops while a grey patch covers each pixel.

    A ``patch`` x ``patch`` square of grey ``fill`` (None: each face's mean)
    slides over the face in steps of ``stride`` (the last step flush with the
    edge); a pixel's value is the mean drop ``score(face) - score(covered
    face)`` over the placements that cover it, clipped at 0 (covering it
    raised the score: no evidence *for* the class). All covered copies of all
    faces go through the model in batches.
    """

    title = "Occlusion"
    description = "Occlusion: slides a grey patch over the face, maps how much hiding each spot lowers the score"

    def __init__(self, model: keras.Model, *, score: Score = "logit", patch: int = 8, stride: int = 4,
                 fill: float | None = None):
        super().__init__(model, score=score)
        if not 1 <= patch <= SIZE or stride < 1:
            raise ValueError(f"need 1 <= patch <= {SIZE} and stride >= 1, got patch {patch}, stride {stride}")
        self.patch, self.stride, self.fill = patch, stride, fill

    def _maps(self, faces: np.ndarray, targets: np.ndarray) -> np.ndarray:
        p = self.patch
        starts = [(r, c) for r in patch_starts(p, self.stride) for c in patch_starts(p, self.stride)]
        grey = faces.mean(axis=(1, 2, 3)) if self.fill is None else np.full(len(faces), float(self.fill))
        covered = np.repeat(faces[:, None], len(starts), axis=1)  # (N, P, 48, 48, 1)
        for k, (r, c) in enumerate(starts):
            covered[:, k, r : r + p, c : c + p] = grey[:, None, None, None]
        n = len(faces)
        base = scores(self.model, self.score, faces)[np.arange(n), targets]  # (N,)
        hidden = scores(self.model, self.score, covered.reshape(-1, SIZE, SIZE, 1)).reshape(n, len(starts), -1)
        drops = base[:, None] - hidden[np.arange(n), :, targets]  # (N, P)
        total = np.zeros((n, SIZE, SIZE), np.float64)
        count = np.zeros((SIZE, SIZE), np.float64)
        for k, (r, c) in enumerate(starts):
            total[:, r : r + p, c : c + p] += drops[:, k, None, None]
            count[r : r + p, c : c + p] += 1
        return np.maximum(total / count, 0)
