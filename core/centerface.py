"""CenterFace: a one-pass face detector with five keypoints, run by OpenCV's DNN module.

Why it is here: MTCNN (``core.faces``) proposes faces with a 12-px window
over an image pyramid and loses many FER2013 faces before its last stage sees
them; CenterFace (Xu et al. 2019, arXiv:1911.03599) predicts a face-centre
heat map, box size and the five keypoints for every 4x4 cell in one forward
pass of a small MobileNet-style network, so it finds a different set of faces
at a similar cost. The weights (``core/weights/centerface.onnx``, 7.3 MB, MIT;
origin in ``core/weights/CENTERFACE-LICENSE.txt``) ship with the repository and
run on ``cv2.dnn``, which ``opencv-python-headless`` already provides: no new
dependency, nothing downloaded at run time.

Two OpenCV facts shape the code. ``cv2.dnn`` in OpenCV 4.14 returns corrupt
outputs when a Net that has run at one input shape is given another, so each
input shape gets its own Net, and photos are fitted into a few fixed canvases
(:data:`CANVASES`) so there are at most that many Nets. And a Net is not
thread-safe, while the dashboard serves several sessions at once: every
forward pass holds :data:`_RUN_LOCK`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

WEIGHTS = Path(__file__).resolve().parent / "weights" / "centerface.onnx"
_OUTPUTS = ["537", "538", "539", "540"]  # heat map, log box size, centre offset, keypoints (the ONNX graph's names)
_STRIDE = 4  # output cells are 4x4 input pixels

# Canvas sizes: a photo is resized (up or down) to fit the smallest canvas
# with its aspect ratio and long side, and the rest is padded; the short sides
# cover 16:9, 4:3 and square photos. The long side trades recall on small
# faces for time: on its own, without core.faces' second look, 1024 px found
# 2 points more faces than 800 px at 1.6x the time; with the second look the
# two were within one face of each other on 100 bench photos, so 800.
LONG_SIDE = 800
ASPECTS = (9 / 16, 3 / 4, 1.0)
NMS_IOU = 0.3  # CenterFace's own non-maximum suppression overlap

_NETS: dict[tuple[int, int], cv2.dnn.Net] = {}
_BUILD_LOCK = threading.Lock()
_RUN_LOCK = threading.Lock()


def canvas_for(width: int, height: int, long_side: int = LONG_SIDE) -> tuple[int, int]:
    """(canvas width, canvas height) that a width x height photo is fitted into; sides are multiples of 32."""
    long_side = max(32, 32 * round(long_side / 32))  # the network halves its input five times
    aspect = min(width, height) / max(width, height)
    short = next(a for a in ASPECTS if a >= aspect - 1e-6)
    short = 32 * int(np.ceil(long_side * short / 32))
    return (long_side, short) if width >= height else (short, long_side)


def _net(width: int, height: int) -> cv2.dnn.Net:
    """The Net for one canvas shape, built on first use (~0.1 s) and run once so its shape is fixed."""
    key = (width, height)
    net = _NETS.get(key)
    if net is None:
        with _BUILD_LOCK:
            net = _NETS.get(key)
            if net is None:
                if not WEIGHTS.exists():
                    raise RuntimeError(f"CenterFace weights missing: {WEIGHTS}")
                net = cv2.dnn.readNetFromONNX(str(WEIGHTS))
                with _RUN_LOCK:
                    net.setInput(np.zeros((1, 3, height, width), np.float32))
                    net.forward(_OUTPUTS)
                _NETS[key] = net
    return net


def detect(rgb: np.ndarray, min_score: float, long_side: int = LONG_SIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces in an (H, W, 3) uint8 RGB photo: boxes (N, 4) x, y, w, h; scores (N,); keypoints (N, 5, 2).

    Coordinates are the photo's own edge coordinates. Keypoints come in the
    order left eye, right eye, nose, mouth left, mouth right, "left" meaning
    the image's left. ``min_score`` is the heat-map peak a face needs (0..1).
    ``long_side``: the canvas's long side (see :func:`canvas_for`).
    """
    h, w = rgb.shape[:2]
    cw, ch = canvas_for(w, h, long_side)
    scale = min(cw / w, ch / h)
    nw, nh = min(cw, max(1, round(w * scale))), min(ch, max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas = np.zeros((ch, cw, 3), np.uint8)
    canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=interpolation)
    # The network takes RGB 0..255 as it is (no mean, no scaling), NCHW.
    blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
    net = _net(cw, ch)
    with _RUN_LOCK:
        net.setInput(blob)
        heat, size, offset, points = net.forward(_OUTPUTS)
    rows, cols = np.nonzero(heat[0, 0] >= min_score)
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
    if len(rows) == 0:
        return empty
    scores = heat[0, 0, rows, cols].astype(np.float64)
    bh = np.exp(size[0, 0, rows, cols]) * _STRIDE
    bw = np.exp(size[0, 1, rows, cols]) * _STRIDE
    x0 = (cols + offset[0, 1, rows, cols] + 0.5) * _STRIDE - bw / 2
    y0 = (rows + offset[0, 0, rows, cols] + 0.5) * _STRIDE - bh / 2
    # Keypoints are stored as (y, x) pairs relative to the box, in box units.
    kx = points[0, 1::2, rows, cols] * bw[:, None] + x0[:, None]
    ky = points[0, 0::2, rows, cols] * bh[:, None] + y0[:, None]
    boxes = np.stack([x0, y0, bw, bh], axis=1)
    keep = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), min_score, NMS_IOU), int).reshape(-1)
    if len(keep) == 0:
        return empty
    factor = np.array([nw / w, nh / h])  # canvas pixels per photo pixel, per axis
    boxes = boxes[keep] / np.tile(factor, 2)
    keypoints = np.stack([kx[keep], ky[keep]], axis=2) / factor
    return boxes.astype(np.float64), scores[keep], keypoints.astype(np.float64)
