"""Heat maps over faces, and contrast for synthetic pictures, as plain uint8 arrays.

Why numpy and ``st.image`` rather than Plotly heat maps: a grid of 4 methods x
several models would be a dozen Plotly figures, each a heavy JSON document
and a WebGL context in every student's browser; a PNG per cell is a few kB.
Every picture is built at the model's 48x48 resolution and only then enlarged
by repeating pixels (``core.figures.upscale``), so what is drawn is exactly
what the model saw and what the method produced, with no smoothing.

No Streamlit here, so notebooks and tests can draw the same pictures.
"""

from __future__ import annotations

import numpy as np

from core.figures import upscale

# Matplotlib's "inferno" at 9 evenly spaced points (black, purple, red, orange,
# pale yellow): perceptually ordered and readable in grey print. Copied rather
# than imported, since matplotlib is not one of the app's dependencies.
INFERNO = np.array(
    [
        (0, 0, 4),
        (31, 12, 72),
        (85, 15, 109),
        (136, 34, 106),
        (186, 54, 85),
        (227, 89, 51),
        (249, 140, 10),
        (249, 201, 50),
        (252, 255, 164),
    ],
    dtype=np.float32,
)


def colormap(values: np.ndarray) -> np.ndarray:
    """(...) floats in 0..1 -> (..., 3) float32 RGB 0..255 on the inferno scale."""
    v = np.clip(np.asarray(values, np.float32), 0, 1) * (len(INFERNO) - 1)
    low = np.floor(v).astype(int).clip(0, len(INFERNO) - 2)
    frac = (v - low)[..., None]
    return INFERNO[low] * (1 - frac) + INFERNO[low + 1] * frac


def heat_overlay(face: np.ndarray, heat: np.ndarray, opacity: float, scale: int = 4) -> np.ndarray:
    """(48, 48) grey face + (48, 48) map in 0..1 -> (48*scale, 48*scale, 3) uint8 RGB.

    Each pixel's colour covers the face in proportion to its own strength
    (alpha = opacity x heat): strong evidence is painted over the face while
    pixels with none leave it visible, so one can see *which* brow or mouth
    corner lit up.
    """
    grey = np.repeat(np.asarray(face, np.float32)[..., None], 3, axis=2)
    heat = np.clip(np.asarray(heat, np.float32), 0, 1)
    alpha = float(opacity) * heat[..., None]
    mixed = (1 - alpha) * grey + alpha * colormap(heat)
    return upscale(np.round(mixed).astype(np.uint8), scale)


def colour_bar(width: int = 192, height: int = 12) -> np.ndarray:
    """(height, width, 3) uint8: the overlay's scale from 0 (left) to 1 (right), for a legend."""
    return np.round(np.repeat(colormap(np.linspace(0, 1, width))[None], height, axis=0)).astype(np.uint8)


def stretch(images: np.ndarray) -> np.ndarray:
    """(K, h, w) any numbers -> (K, h, w) uint8, each image's own range spread over 0..255.

    Gradient-ascent pictures and feature maps use only a narrow band of grey
    levels (or arbitrary activation units); per-image contrast shows their
    pattern. A flat image (a dead filter) stays uniformly black.
    """
    x = np.asarray(images, np.float32)
    low = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - low
    return np.round(255 * (x - low) / np.where(span > 0, span, 1)).astype(np.uint8)


def enlarge_to(images: np.ndarray, side: int) -> np.ndarray:
    """(K, h, w[, 3]) -> each image enlarged by the whole factor that brings it nearest ``side`` px.

    Feature maps shrink layer by layer (48, 24, 12, 6 px); shown at one size
    they compare cell for cell, and whole factors keep every cell a crisp square.
    """
    factor = max(1, round(side / images.shape[1]))
    return np.stack([upscale(image, factor) for image in images])
