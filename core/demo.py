"""A procedural FER2013 stand-in: cartoon faces whose emotion lives only in brows, eyes and mouth.

Why it exists: the dashboard must be usable (train, explain, compare) without the
real FER2013 download, and explanation methods need a set where the *right*
answer is known. Here it is known by construction: everything outside the brows,
eyes and mouth (head shape, hair, skin tone, background, lighting, pose, noise)
is drawn independently of the label, so a model can only succeed by looking at
the expressive regions, and each face ships with a ground-truth mask of them.

The pose jitter (shift, scale, rotation) is there so that a model on raw pixel
positions (an MLP) does clearly worse than a convolutional one, as on real
faces; the per-emotion parameters overlap a little so no class is trivial.

Faces are drawn at ``SUPERSAMPLE`` times the final size and shrunk with area
averaging, which anti-aliases the thin strokes the way a camera would.
"""

from __future__ import annotations

from itertools import accumulate
from typing import NamedTuple

import cv2
import numpy as np

from core.data import EMOTIONS, SIZE, FaceDataset

SUPERSAMPLE = 4
CENTRE = (SIZE - 1) / 2  # pixel-centre coordinates: pixel i is centred on i
EYE_Y, EYE_DX, BROW_GAP, MOUTH_Y = 21.0, 8.0, 4.8, 35.0
MASK_MARGIN = 2.0  # px the mask extends past each drawn feature, so it covers its anti-aliased edge
_SHIFT_BITS = 4  # cv2 fixed-point fraction bits: sub-pixel placement of every vertex
_CIRCLE = np.stack([np.cos(a := np.linspace(0, 2 * np.pi, 24, endpoint=False)), np.sin(a)], axis=1)
_MOUTH_T = np.linspace(-1.0, 1.0, 13)
_BROW_T = np.linspace(0.0, 1.0, 7)


class Expression(NamedTuple):
    """What one emotion does to the face, in 48-px units (positive y is down).

    brow_raise: brows lifted above rest; brow_tilt: inner ends higher than outer
    ends (negative: the angry V); brow_arch: middle bump; eye_open: half-height
    of the eye opening; mouth_width: half-width; mouth_curve: corners above the
    centre (smile) or below (frown); mouth_open: lip gap; mouth_sneer: one
    corner pulled up (the side is random per face).
    """

    brow_raise: float
    brow_tilt: float
    brow_arch: float
    eye_open: float
    mouth_width: float
    mouth_curve: float
    mouth_open: float
    mouth_sneer: float


# One row per emotion. Most pairs differ in two or three regions (Happy and
# Neutral mainly by the mouth), so a model that watches only one region misses some.
EXPRESSIONS: dict[str, Expression] = {
    "Angry": Expression(-1.2, -2.6, 0.0, 1.0, 4.6, -0.5, 0.0, 0.0),
    "Disgust": Expression(-0.8, -1.0, 0.0, 0.7, 5.2, -1.0, 0.8, 2.6),
    "Fear": Expression(2.0, 2.2, 0.0, 2.6, 6.5, -0.8, 3.0, 0.0),
    "Happy": Expression(0.3, 0.0, 0.8, 1.4, 6.5, 2.8, 0.8, 0.0),
    "Sad": Expression(0.3, 2.2, 0.0, 1.4, 5.0, -2.2, 0.0, 0.0),
    "Surprise": Expression(3.2, 0.0, 1.5, 2.8, 3.2, 0.0, 5.0, 0.0),
    "Neutral": Expression(0.0, 0.0, 0.3, 1.8, 5.5, 0.0, 0.0, 0.0),
}
# Per-face standard deviation of each parameter: individual faces vary and the
# classes overlap at their edges.
SPREAD = Expression(0.5, 0.6, 0.3, 0.25, 0.6, 0.5, 0.5, 0.5)


class Shape(NamedTuple):
    """A polygon or polyline in canonical face coordinates, with how to paint it."""

    points: np.ndarray  # (K, 2) x, y
    fill: int | None  # grey level inside the closed polygon, None for an open line
    line: int | None  # grey level of the outline, None for none
    width: float  # outline width in 48-px units


def _ellipse(cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return np.array([cx, cy]) + _CIRCLE * np.array([ax, ay])


def _vary(expression: Expression, rng: np.random.Generator) -> Expression:
    """This face's own version of the emotion: every parameter nudged by its SPREAD."""
    values = np.array(expression) + rng.normal(size=len(SPREAD)) * np.array(SPREAD)
    return Expression(*values.tolist())


def _head(rng: np.random.Generator, skin: int, ink: int) -> list[Shape]:
    """Hair, face oval and nose: varied per face, identical in law across emotions."""
    shapes = []
    if rng.random() < 0.7:
        hair = _ellipse(CENTRE, rng.uniform(14, 18), rng.uniform(18, 21), rng.uniform(12, 16))
        shapes.append(Shape(hair, int(rng.uniform(10, 120)), None, 0))
    face = _ellipse(CENTRE, rng.uniform(25, 27), rng.uniform(15, 18), rng.uniform(19, 22))
    shapes.append(Shape(face, skin, int(skin * 0.8), 1.0))
    nose = np.array([[CENTRE, 25.0], [CENTRE - 1.0, 29.5], [CENTRE + 1.2, 30.0]])
    shapes.append(Shape(nose, None, (skin + ink) // 2, 0.8))
    return shapes


def _brows(e: Expression, rng: np.random.Generator, ink: int) -> list[Shape]:
    """Two brows, outer end to inner end: raise, tilt and arch carry the emotion."""
    width = rng.uniform(1.0, 2.0)
    shapes = []
    for side in (-1.0, 1.0):  # -1: the face's right brow (image left)
        x = CENTRE + side * (EYE_DX + 4.5 - 8.0 * _BROW_T)
        arch = 4 * e.brow_arch * _BROW_T * (1 - _BROW_T)
        y = EYE_Y - BROW_GAP - e.brow_raise - e.brow_tilt * (_BROW_T - 0.5) - arch
        shapes.append(Shape(np.stack([x, y], axis=1), None, ink, width))
    return shapes


def _eyes(e: Expression, rng: np.random.Generator, ink: int, sclera: int) -> list[Shape]:
    """Two eyes: the opening's height is the signal (squint ... wide open)."""
    half_width = rng.uniform(2.9, 3.5)
    opening = max(e.eye_open, 0.3)
    gaze = rng.uniform(-0.8, 0.8)
    shapes = []
    for side in (-1.0, 1.0):
        cx = CENTRE + side * EYE_DX
        shapes.append(Shape(_ellipse(cx, EYE_Y, half_width, opening), sclera, ink, 0.8))
        pupil = min(1.4, 0.8 * opening)
        shapes.append(Shape(_ellipse(cx + gaze, EYE_Y, pupil, pupil), ink, None, 0))
    return shapes


def _mouth(e: Expression, rng: np.random.Generator, ink: int) -> list[Shape]:
    """The mouth: a curved line when closed, a filled lip outline when open."""
    side = rng.choice((-1.0, 1.0))  # which corner a sneer lifts
    t = _MOUTH_T
    x = CENTRE + max(e.mouth_width, 2.0) * t
    sneer = e.mouth_sneer * (((1 + side * t) / 2) ** 2 + 0.3 * side * np.sin(np.pi * t))  # lifted corner, wavy
    centre_line = MOUTH_Y - e.mouth_curve * (t**2 - 0.5) - sneer
    gap = max(e.mouth_open, 0.0) * np.sqrt(1 - t**2)
    lip = rng.uniform(0.9, 1.5)
    if gap.max() < 0.6:
        return [Shape(np.stack([x, centre_line], axis=1), None, ink, lip)]
    upper = np.stack([x, centre_line - 0.35 * gap], axis=1)
    lower = np.stack([x, centre_line + 0.65 * gap], axis=1)[::-1]
    return [Shape(np.concatenate([upper, lower]), ink // 2, ink, lip)]


def _pose(rng: np.random.Generator) -> np.ndarray:
    """(2, 3) affine map from canonical to image coordinates: rotation, scale, shift."""
    matrix = cv2.getRotationMatrix2D((CENTRE, CENTRE), rng.uniform(-12, 12), rng.uniform(0.85, 1.15))
    matrix[:, 2] += rng.uniform(-4, 4, size=2)
    return matrix


def _fixed_point(shapes: list[Shape], matrix: np.ndarray, scale: int) -> list[np.ndarray]:
    """Every shape's posed vertices in cv2 fixed point on a canvas ``scale`` times 48 px.

    48-px pixel i is centred on i; on the bigger canvas its centre is at
    scale * i + (scale - 1) / 2, which keeps image and mask aligned. All shapes
    go through one matrix product because per-shape numpy calls dominated the time.
    """
    points = np.concatenate([shape.points for shape in shapes])
    posed = points @ matrix[:, :2].T + matrix[:, 2]
    fixed = np.round((posed * scale + (scale - 1) / 2) * (1 << _SHIFT_BITS)).astype(np.int32)
    ends = accumulate(len(shape.points) for shape in shapes)
    return [fixed[end - len(shape.points) : end] for shape, end in zip(shapes, ends)]


def _draw(canvas: np.ndarray, shapes: list[Shape], matrix: np.ndarray, scale: int, grow: float = 0.0) -> None:
    """Paint shapes in order; ``grow`` widens every outline (used for the mask)."""
    for shape, vertices in zip(shapes, _fixed_point(shapes, matrix, scale)):
        if shape.fill is not None:
            cv2.fillPoly(canvas, [vertices], shape.fill, cv2.LINE_8, _SHIFT_BITS)
        if shape.line is not None:
            thickness = max(1, round((shape.width + 2 * grow) * scale))
            cv2.polylines(canvas, [vertices], shape.fill is not None, shape.line, thickness, cv2.LINE_8, _SHIFT_BITS)


def _face(emotion: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (48, 48) uint8 face of the given emotion and its (48, 48) bool feature mask."""
    background, skin = int(rng.integers(20, 236)), int(rng.integers(90, 226))
    ink = int(skin * rng.uniform(0.15, 0.45))
    sclera = int(min(255, skin + rng.uniform(15, 50)))
    e = _vary(EXPRESSIONS[EMOTIONS[emotion]], rng)
    features = _brows(e, rng, ink) + _eyes(e, rng, ink, sclera) + _mouth(e, rng, ink)
    head = _head(rng, skin, ink)
    matrix = _pose(rng)

    canvas = np.full((SIZE * SUPERSAMPLE, SIZE * SUPERSAMPLE), background, dtype=np.uint8)
    _draw(canvas, head + features, matrix, SUPERSAMPLE)
    image = cv2.resize(canvas, (SIZE, SIZE), interpolation=cv2.INTER_AREA)

    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    # Pupils (the shapes without an outline) lie inside their eye and add nothing to the mask.
    outlined = [s._replace(fill=None if s.fill is None else 1, line=1) for s in features if s.line is not None]
    _draw(mask, outlined, matrix, 1, MASK_MARGIN)
    return image, mask.astype(bool)


def _lighting(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-face contrast, brightness, a linear lighting gradient and sensor noise, as uint8.

    Done for all faces at once, in place, in float32: it is the biggest array we touch.
    """
    n = len(images)
    coords = (np.arange(SIZE, dtype=np.float32) - CENTRE) / SIZE
    angle = rng.uniform(0, 2 * np.pi, n)
    strength = rng.uniform(0, 60, n)
    along_x = (strength * np.cos(angle)).astype(np.float32)[:, None, None] * coords[None, None, :]
    along_y = (strength * np.sin(angle)).astype(np.float32)[:, None, None] * coords[None, :, None]
    contrast = rng.uniform(0.7, 1.3, n).astype(np.float32)[:, None, None]
    brightness = rng.uniform(-25, 25, n).astype(np.float32)[:, None, None]
    sigma = rng.uniform(2, 9, n).astype(np.float32)[:, None, None]
    lit = images.astype(np.float32)
    mean = lit.mean(axis=(1, 2), keepdims=True)
    lit -= mean
    lit *= contrast
    lit += mean + brightness
    lit += along_x
    lit += along_y
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    noise *= sigma
    lit += noise
    np.rint(lit, out=lit)
    np.clip(lit, 0, 255, out=lit)
    return lit.astype(np.uint8)


def make_demo(n_per_class: int = 300, test_per_class: int = 60, seed: int = 0) -> FaceDataset:
    """Synthetic faces: ``n_per_class`` per emotion in "Training", ``test_per_class`` in "PublicTest".

    Within each split the emotions are shuffled (by ``seed``) so that any prefix
    is balanced-ish, as in the Kaggle CSV. The same seed gives byte-identical
    faces; ``masks`` marks the brows, eyes and mouth of every face.
    """
    rng = np.random.default_rng(seed)
    classes = np.arange(len(EMOTIONS), dtype=np.int64)
    counts = (n_per_class, test_per_class)
    labels = np.concatenate([rng.permutation(np.repeat(classes, count)) for count in counts])
    splits = np.repeat(np.array(["Training", "PublicTest"]), len(EMOTIONS) * np.array(counts))
    images = np.empty((len(labels), SIZE, SIZE), dtype=np.uint8)
    masks = np.empty((len(labels), SIZE, SIZE), dtype=bool)
    for i, label in enumerate(labels):
        images[i], masks[i] = _face(int(label), rng)
    return FaceDataset(
        images=_lighting(images, rng),
        labels=labels,
        splits=splits,
        ids=np.array([f"demo:{i}" for i in range(len(labels))]),
        source="demo",
        masks=masks,
    )
