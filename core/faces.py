"""Faces in user photos: decode safely, find every face, align it the way FER2013 frames faces.

FER2013 faces are tightly cropped, roughly frontal, eyes level, 48x48 grey. A
model trained on them sees a face at one scale and position only, so a face from
a photo has to be cut out the same way: :func:`align_face` turns the face so its
eyes are level and scales and shifts it so its eyes, nose and mouth land where
they do, on median, in FER2013 (constants below, measured on 500 FER2013
Training faces by ``python bench/photo_path.py --measure-template``).

Detector choice, measured with ``bench/photo_path.py`` on 300 synthetic photos
(655 FER2013 PublicTest faces, 60-400 px, tilted up to 25 degrees, JPEG 40-95)
on this project's 2-core machine while a training run used both cores (load
average 4-6, so wall times are high; the rows come from two runs on the same
photos, see the README):

=====================================  ======  ================  =============
detector (photo fitted to, px)         recall  false pos./photo  detect ms
                                               (on background)   median / p95
=====================================  ======  ================  =============
centerface (800) (default)             92.5%   0.133 (0.027)     316 / 495
mtcnn+centerface (800 / 800)           94.5%   0.157 (0.040)     575 / 932
mtcnn (800)                            90.1%   0.053 (0.013)     226 / 445
mtcnn (640)                            89.0%   0.067 (0.023)     225 / 436
haar (800)                             44.0%   0.513 (0.467)     340 / 642
=====================================  ======  ================  =============

``centerface`` (default) is CenterFace (:mod:`core.centerface`: ONNX weights
shipped in ``core/weights``, run by OpenCV's DNN module) with MTCNN taking a
second look. CenterFace finds faces in one pass at every scale, more of them
than MTCNN and in less time (on its own, before MTCNN's looks: 93.1%, 203 /
388 ms; at score 0.3 87.0%, at 0.5 77.3%; its operating score is 0.15).
MTCNN (the ``mtcnn`` package, TensorFlow, weights inside the wheel) then looks
closer, twice: at boxes CenterFace doubts (score 0.05-0.15), see below, and at
every face found, to give it MTCNN's keypoints (:func:`_mtcnn_keypoints`),
which frame faces more steadily (that costs 0.6 points of recall and ~100
ms at p95, and keeps the astronaut test photo's crop where it belongs). The
photo path then answers 62.5% of the faces it finds right, against 63.5%
for the same faces given directly as 48x48 (``ferlab-5f9c8a749f``).
``mtcnn+centerface`` (both on the whole photo) finds the most faces but costs
1.8x the time, far over the 500 ms budget under load (with MTCNN at 640 px,
in an earlier run: 94.7%, 461 / 644 ms).

MTCNN's PNet and RNet only propose boxes; lowering their thresholds lets more
faces reach ONet, which still decides. Boxes a detector doubts (MTCNN ONet
0.3-0.85, CenterFace 0.05-0.15) get a *second look* (:func:`_recheck`): cut
from the full-resolution photo with context, enlarged, turned 0, +-20 and
+-35 degrees, one MTCNN batch; two views must agree. That finds small faces
and faces tilted past the detectors' upright range (MTCNN alone: recall on
faces tilted > 15 degrees 78.0% -> 85.7%) without turning the whole photo,
which costs 4x the time and triples false positives on background
(:func:`faces_in_rgb` still does that when a photo yields no face at all).
Haar is faster to start (no TensorFlow) but misses tilted faces, fires on
texture and gives no keypoints.

A face found with keypoints is reported with the square its aligned crop
covers (:func:`crop_box`), not the detector's own box: MTCNN's box is
narrower and taller than a FER2013 frame, CenterFace's larger, and 4% of the
faces got a box that missed their frame (IoU < 0.4, counted as a miss and a
false positive) although the face was found. With this framing MTCNN (800
px) went from 88.4% to 90.1% and its false positives from 0.097 to 0.053 a
photo.

Found against framed: the table's recall counts a face only when its box
overlaps the face's own 48x48 FER2013 frame at IoU >= 0.4, so it asks for the
face *and* FER2013's framing of it. Of the 49 faces the default missed so
(second look at 2 boxes a photo), 22 (3.4% of all) do get a box on the face,
framed the median FER2013 way, while their own frame is far from the median
(a face small in its frame, or cut off by it): IoU 0.2-0.4. Asked only
whether each face was found (the bench's "on the face" rule: the box's centre
inside the frame, its side 0.5-2x the frame's), the default, with a second
look at up to 3 boxes a photo (session 5), finds 95.6% (626 of 655 faces;
framed: 93.0%), with 0.077 false positives a photo, and answers 61.8% of
those faces right against 62.9% for the same faces given directly; on an
idle machine it takes 218 / 364 ms a photo (median / p95). Of the 29 it does
not find, 12 it does not find even on their own (upscaled 4x, mirrored
border: it finds 95.1% of the 591 distinct faces so; hands over the face,
strong tilt, posterized); the rest are mostly tilted over 15 degrees or
framed under 100 px, which only whole-photo turns find more of, at 3-4x the
time.

Also measured for MTCNN, on the same photos, and not taken: PNet/RNet 0.4/0.5
(84.6%, 3x the background false positives, e.g. on suit buckles) and 0.3/0.3
(87.3%, false positives 0.180, p95 540 ms); min_face_size 16 (fewer faces
found); pyramid scale factor 0.8 (no gain, 1.5x time); a second look that
trusts one view (+0.5 points, 2x background false positives); the whole photo
turned +-30 degrees as well (91.3%, false positives 0.217, p95 1.5 s).
CenterFace on a 1024-px canvas instead of 800: within one face of it on 100
photos with the second look, at 1.6x the time.

Rejected without measuring: ``mediapipe`` (its wheel ships no face model: the
tasks API wants a ``.tflite`` downloaded at run time), OpenCV's YuNet
(``cv2.FaceDetectorYN`` needs an ONNX file that no wheel ships),
``retina-face`` (downloads weights at run time), ``facenet-pytorch``
(PyTorch, a second deep-learning stack for one detector), ``dlib`` (compiles
from source).

Nothing here imports Streamlit. TensorFlow is imported only when MTCNN is
first needed (for the default detector: at the first second look).
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from core import centerface
from core.data import upright_rgb

SIZE = 48

# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

MAX_PIXELS = 40_000_000  # ~40 megapixels: larger than any phone photo, small enough to decode safely
MAX_SIDE = 20_000  # a 1x40-megapixel strip is no photo either
# Pillow tells formats by content, not by the file's extension: only these are
# opened (EPS, say, would be handed to Ghostscript through a temporary file).
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG opens multi-picture (MPO) files too
# Photos are kept at most this long side: the detectors look at 800 pixels, so
# a face they find is >= 2.5% of the side, >= 51 pixels here, more than the
# models' 48; a 40-megapixel photo would cost ~120 MB per copy instead of ~12.
DECODE_SIDE = 2048
# Decodes at once, server-wide: a class uploading together queues, rather than
# holding a full-size decode (several copies of the photo) per student.
_DECODING = threading.BoundedSemaphore(2)


class PhotoError(ValueError):
    """A file that cannot be used as a photo; the message is meant for the user."""


def load_photo(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB from the bytes of an image file, decoded in memory.

    Decoded as image-folder faces are (:func:`core.data.upright_rgb`: EXIF
    orientation, transparency on white, 8-bit RGB from any mode), then shrunk
    to :data:`DECODE_SIDE` if longer. The pixel count is checked from the
    header *before* the pixels are decoded, so a decompression bomb (a small
    file that claims to be gigapixels) costs nothing.

    Raises :class:`PhotoError` for an empty file, something that is not an
    image, a truncated or damaged file, or an image over :data:`MAX_PIXELS`.
    """
    if data is None or len(data) == 0:
        raise PhotoError("The file is empty (0 bytes). Please upload a photo.")
    with _DECODING:
        return _decode(data)


def _decode(data: bytes) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Our own limit is checked below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(data)), formats=PHOTO_FORMATS)
    except Image.DecompressionBombError:
        raise PhotoError(_too_large_message()) from None
    except UnidentifiedImageError:
        raise PhotoError("This file is not an image we can read (JPEG, PNG, WebP, BMP, GIF or TIFF).") from None
    except Exception as err:  # noqa: BLE001 - a parser choking on junk is the same thing to the user
        raise PhotoError(f"This file is not an image we can read ({type(err).__name__}).") from None

    width, height = image.size
    if width < 1 or height < 1:
        raise PhotoError("The image has no pixels.")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise PhotoError(_too_large_message(width, height))

    try:
        image.draft("RGB", (DECODE_SIDE, DECODE_SIDE))  # JPEG: decoded at 1/2, 1/4.. scale, still >= DECODE_SIDE
        image.load()
    except OSError as err:
        if "truncat" in str(err).lower() or "broken data stream" in str(err).lower():
            raise PhotoError("The image file is cut short (truncated): was the upload interrupted?") from None
        raise PhotoError(f"The image file is damaged and cannot be decoded ({err}).") from None
    except Exception as err:  # noqa: BLE001 - zlib, struct, syntax errors from damaged data
        raise PhotoError(f"The image file is damaged and cannot be decoded ({type(err).__name__}).") from None

    rgb = upright_rgb(image)
    del image
    return shrink_to(rgb, DECODE_SIDE)


def shrink_to(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` resized so its long side is at most ``side`` pixels (unchanged if already smaller).

    INTER_AREA averages the pixels each output pixel covers, so a shrunk photo does not alias; one
    helper serves decoding, detection and the dashboard's preview so they round sizes alike.
    """
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _too_large_message(width: int | None = None, height: int | None = None) -> str:
    size = f" ({width} x {height} pixels)" if width else ""
    return (
        f"The image is too large{size}: the limit is {MAX_PIXELS // 1_000_000} megapixels. "
        "Please upload a smaller photo."
    )


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------

KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# A detector is one of these names, or several joined by "+" (their union:
# a face the first one found is kept, the others add the faces it missed).
DETECTOR_PARTS = ("mtcnn", "centerface", "haar")
DETECTORS = ("centerface", "mtcnn", "mtcnn+centerface", "haar")
DEFAULT_DETECTOR = "centerface"
DETECT_MAX_SIDE = 800  # photos are shrunk to this longest side for MTCNN and Haar (boxes are mapped back)
MTCNN_MIN_SCORE = 0.85  # ONet confidence a face needs (bench: 0.9 loses 1-2 points of recall for few false positives less)
# CenterFace heat-map peak a face needs, and the lower peak from which a box
# gets the second look below (see core.centerface for the detector itself).
CENTERFACE_MIN_SCORE = 0.15
CENTERFACE_DOUBT_SCORE = 0.05
# Options passed to mtcnn. Its first two stages only propose boxes for ONet,
# which decides: their thresholds are lowered from mtcnn's defaults (PNet
# 0.6, RNet 0.7), because FER2013 faces in photos are lost *before* ONet sees
# them (bench: recall 82.0% -> 84.6%; 0.3/0.3 gives 87.3% but p95 540 ms).
# ONet's own threshold is RECHECK_MIN_SCORE so the boxes it doubts come back
# for a second look; min_face_size is in pixels of the shrunk photo.
RECHECK_MIN_SCORE = 0.3
MTCNN_OPTIONS: dict[str, float] = {
    "threshold_pnet": 0.5, "threshold_rnet": 0.6, "threshold_onet": RECHECK_MIN_SCORE, "min_face_size": 20,
}
# Second look at doubtful boxes (ONet score RECHECK_MIN_SCORE..MTCNN_MIN_SCORE,
# not on a face already found): the area around each, RECHECK_CONTEXT times
# the box side, cut from the full-resolution photo at RECHECK_SIZE px and
# turned by each of RECHECK_ANGLES, all in one MTCNN batch. Most such boxes
# are faces tilted past MTCNN's upright range or too small in the shrunk
# photo; background boxes seldom look like a face from two angles, so a box
# counts when RECHECK_VIEWS views find a face at MTCNN_MIN_SCORE.
# RECHECK_MAX bounds the time: boxes per photo, best score (against its
# detector's operating score) first. Bench, idle machine, found on the face /
# photo p95: 2 boxes 95.1% / 345 ms, 3 boxes 95.6% / 364 ms, 4 boxes no more
# faces; 3 boxes with CenterFace doubting from 0.03: 96.0% / 481 ms, too near
# the 500 ms budget.
RECHECK_MAX = 3
RECHECK_SIZE = 160
RECHECK_CONTEXT = 2.0
RECHECK_ANGLES = (0.0, -20.0, 20.0, -35.0, 35.0)
RECHECK_VIEWS = 2
HAAR_MIN_NEIGHBOURS = 5
_MIN_SCORES = {"mtcnn": MTCNN_MIN_SCORE, "centerface": CENTERFACE_MIN_SCORE, "haar": 0.0}
_DOUBT_SCORES = {"mtcnn": RECHECK_MIN_SCORE, "centerface": CENTERFACE_DOUBT_SCORE, "haar": 0.0}  # haar: no second look
_OVERLAP = 0.4  # IoU above which two boxes are the same face


@dataclass(frozen=True)
class Face:
    """One face in a photo.

    box: (x, y, w, h) in photo pixels, edge coordinates (pixel i spans [i, i+1]).
    score: the detector's confidence (MTCNN probability, CenterFace heat-map peak, Haar level
        weight; 0 for fallbacks).
    keypoints: name -> (x, y) for ``KEYPOINTS`` when the detector gives them, else None.
        ``left_eye`` is the eye on the image's left (the person's right eye).
    detector: which detector (or fallback) gave its keypoints, or its box when it has none;
        alignment uses that detector's keypoint template or box framing.
    angle: degrees (counter-clockwise) the photo was turned when the face was
        found (see ``rotations`` in :func:`detect_faces`); the box is upright in
        that turned photo, and box-based alignment turns it back.
    """

    box: tuple[float, float, float, float]
    score: float = 0.0
    keypoints: dict[str, tuple[float, float]] | None = None
    detector: str = "mtcnn"
    angle: float = 0.0

    @property
    def int_box(self) -> tuple[int, int, int, int]:
        x, y, w, h = self.box
        return int(round(x)), int(round(y)), int(round(w)), int(round(h))

    def eye_angle(self) -> float | None:
        """Degrees the line from left to right eye turns clockwise on screen (0: level), None without keypoints."""
        if not self.keypoints:
            return None
        (lx, ly), (rx, ry) = self.keypoints["left_eye"], self.keypoints["right_eye"]
        return float(np.degrees(np.arctan2(ry - ly, rx - lx)))


_MTCNN = None
_MTCNN_BUILD_LOCK = threading.Lock()
# TensorFlow on 2 cores gains nothing from two detections at once, and Keras
# layers are not documented as safe to call from several threads: one at a time.
_MTCNN_RUN_LOCK = threading.Lock()
_HAAR = threading.local()  # cv2.CascadeClassifier is not thread-safe: one per thread (cheap, ~20 ms)


def _mtcnn():
    """The process-wide MTCNN detector, built on first use (it costs seconds: TensorFlow import + weights)."""
    global _MTCNN
    if _MTCNN is None:
        with _MTCNN_BUILD_LOCK:
            if _MTCNN is None:
                from mtcnn import MTCNN
                from mtcnn.stages import StageONet, StageRNet

                _MTCNN = MTCNN(stages=[_pnet_stage(), StageRNet, StageONet], device="CPU:0")
    return _MTCNN


def _pnet_stage():
    """mtcnn 1.0's PNet stage with a corrected image pyramid.

    mtcnn 1.0 counts its pyramid levels as if ``min_face_size`` were always 20:
    with a larger minimum the last levels shrink below PNet's 12-px window,
    TensorFlow raises, and mtcnn reports *no faces at all*. Here the pyramid
    stops at the last level that is still >= 12 px, so ``min_face_size`` can be
    raised (PNet on the pyramid is ~80% of the detection time; its cost falls
    with the square of the minimum face size).
    """
    from mtcnn.stages import StagePNet
    from mtcnn.utils.bboxes import generate_bounding_box, resize_to_square, smart_nms_from_bboxes, upscale_bboxes
    from mtcnn.utils.images import scale_images

    class PNet(StagePNet):
        def __call__(self, images_normalized, images_oshapes, min_face_size=20, min_size=12, scale_factor=0.709,
                     threshold_pnet=0.6, nms_pnet1=0.5, nms_pnet2=0.7, **kwargs):
            min_dim = float(min(min(int(s[0]), int(s[1])) for s in np.asarray(images_oshapes)))
            scales = []
            scale = min_size / min_face_size
            while min_dim * scale >= min_size:
                scales.append(scale)
                scale *= scale_factor
            if not scales:
                return np.empty((0, 6))
            batch_size = images_normalized.shape[0]
            proposals = []
            for scale in scales:
                result = self._model(scale_images(images_normalized, scale))
                boxes = generate_bounding_box(result[0], result[1], threshold_pnet)
                boxes = upscale_bboxes(boxes, np.asarray([scale] * batch_size))
                proposals.append(smart_nms_from_bboxes(boxes, threshold=nms_pnet1, method="union", initial_sort=False))
            boxes = np.concatenate(proposals, axis=0) if proposals else np.empty((0, 6))
            boxes = smart_nms_from_bboxes(boxes, threshold=nms_pnet2, method="union", initial_sort=True)
            return resize_to_square(boxes)

    return PNet


def _haar() -> cv2.CascadeClassifier:
    cascade = getattr(_HAAR, "face", None)
    if cascade is None:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if cascade.empty():
            raise RuntimeError("OpenCV's haarcascade_frontalface_default.xml is missing")
        _HAAR.face = cascade
    return cascade


def warm_up(detector: str = DEFAULT_DETECTOR) -> None:
    """Build the detector now (e.g. at server start) so the first user does not wait for it.

    CenterFace needs MTCNN too (its second look and keypoints), which a blank
    image never reaches: it is built here as well.
    """
    detect_faces(np.full((64, 64, 3), 128, np.uint8), detector=detector)
    if "centerface" in _parts(detector):
        _mtcnn()


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    if rgb.shape[2] == 4:
        rgb = rgb[..., :3]
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def _parts(detector: str) -> list[str]:
    parts = detector.split("+")
    if detector not in DETECTORS and not all(p in DETECTOR_PARTS for p in parts):
        raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    return parts


def detect_faces(
    rgb: np.ndarray,
    detector: str = DEFAULT_DETECTOR,
    max_side: int | None = None,
    min_score: float | None = None,
    rotations: tuple[float, ...] = (0.0,),
    recheck: bool = True,
) -> list[Face]:
    """Every face in an RGB photo, sorted left to right.

    ``detector``: one of :data:`DETECTORS`; "a+b" is the union of a and b
    (a face both find comes from a, the detector whose keypoints
    :data:`FER_TEMPLATE` was measured with when a is MTCNN).
    The photo is shrunk (area averaging) to ``max_side`` on its longest side
    before detection, for speed (default: :data:`DETECT_MAX_SIDE` for MTCNN and
    Haar, CenterFace's canvas for CenterFace); boxes and keypoints are mapped
    back to the photo's own pixels. ``min_score`` (single detectors only)
    overrides the detector's operating score. ``rotations``: the angles
    (degrees, counter-clockwise) to turn the photo by and look in; the default
    looks upright only. Add e.g. -30 and 30 for heads tilted past what the
    detectors handle (~35 degrees): each angle costs one more detection, and
    overlapping finds are merged (the higher score stays). ``recheck``: take
    the boxes a keypoint detector doubts for a second, closer and turned look
    by MTCNN (see ``RECHECK_*``); it costs one small batch, only on photos
    that have such boxes. A face with keypoints is reported with the box its
    aligned crop covers (:func:`crop_box`). Thread-safe.
    """
    parts = _parts(detector)
    if min_score is not None and len(parts) > 1:
        raise ValueError("min_score applies to a single detector, not to a union")
    rgb = _as_rgb(rgb)
    faces: list[Face] = []
    doubtful: list[Face] = []
    for part in parts:
        side = max_side or (centerface.LONG_SIDE if part == "centerface" else DETECT_MAX_SIDE)
        threshold = _MIN_SCORES[part] if min_score is None else min_score
        floor = min(threshold, _DOUBT_SCORES[part]) if recheck else threshold
        found, doubt = _detect_scaled(rgb, part, side, threshold, floor, rotations)
        faces += [f for f in found if all(box_iou(f.box, k.box) <= _OVERLAP for k in faces)]
        doubtful += doubt
    if recheck and doubtful:
        doubtful = [d for d in doubtful if all(box_iou(d.box, f.box) < 0.3 for f in faces)]
        # Most promising first; scores of different detectors compare through their operating score.
        doubtful = sorted(doubtful, key=lambda f: -f.score / _MIN_SCORES[f.detector])[:RECHECK_MAX]
        faces = _merge(faces, _recheck(rgb, doubtful, MTCNN_MIN_SCORE))
    if recheck:
        faces = _mtcnn_keypoints(rgb, faces)
    return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


def _detect_scaled(
    rgb: np.ndarray, detector: str, max_side: int, min_score: float, floor: float, rotations: tuple[float, ...]
) -> tuple[list[Face], list[Face]]:
    """(faces at ``min_score``, doubtful boxes at ``floor``..``min_score``) of one detector, in photo pixels."""
    h, w = rgb.shape[:2]
    small = shrink_to(rgb, max_side)
    # Exact per-axis factors after rounding the shrunk size.
    sx, sy = w / small.shape[1], h / small.shape[0]
    faces: list[Face] = []
    doubtful: list[Face] = []
    for angle in rotations:
        found = _detect_rotated(small, detector, floor, float(angle), max_side)
        faces = _merge(faces, [f for f in found if f.score >= min_score])
        doubtful += [f for f in found if f.score < min_score]
    return [_framed(_scale_face(f, sx, sy)) for f in faces], [_framed(_scale_face(f, sx, sy)) for f in doubtful]


def _framed(face: Face) -> Face:
    """The face with its box replaced by :func:`crop_box` when its keypoints place the crop.

    Detectors frame faces each their own way; boxes in one convention are
    what makes overlaps between detectors (and with a FER2013 frame) mean the same.
    """
    return replace(face, box=crop_box(face)) if _keypoint_transform(face) is not None else face


def _recheck(rgb: np.ndarray, doubtful: list[Face], min_score: float) -> list[Face]:
    """The doubtful boxes that turn out to be faces when looked at closer, from several angles.

    Each box gets a view per angle in :data:`RECHECK_ANGLES`; a box becomes a
    face when at least :data:`RECHECK_VIEWS` views find one near the view's
    centre at ``min_score``. Its best view gives the face, in photo coordinates.
    """
    views, backs = [], []
    for face in doubtful:
        for angle in RECHECK_ANGLES:
            view, back = _turned_view(rgb, face.box, angle)
            views.append(view)
            backs.append(back)
    if not views:
        return []
    found: dict[int, dict[int, Face]] = {}
    per_box = len(RECHECK_ANGLES)
    for k, face in _detect_mtcnn_batch(views, min_score):
        x, y, w, h = face.box
        if max(abs(x + w / 2 - RECHECK_SIZE / 2), abs(y + h / 2 - RECHECK_SIZE / 2)) > RECHECK_SIZE / 4:
            continue  # a neighbour in the context, not the doubtful box
        box, angle = divmod(k, per_box)
        best = found.setdefault(box, {})
        if angle not in best or face.score > best[angle].score:
            best[angle] = _map_face(face, backs[k], RECHECK_ANGLES[angle])
    return [_framed(max(by_angle.values(), key=lambda f: f.score)) for by_angle in found.values() if len(by_angle) >= RECHECK_VIEWS]


def _mtcnn_keypoints(rgb: np.ndarray, faces: list[Face]) -> list[Face]:
    """The faces, each CenterFace one replaced by MTCNN's find in a closer, levelled view of it, if MTCNN finds it.

    CenterFace finds faces MTCNN misses, but places its keypoints less
    steadily: on the same face its framing moves by up to 15% with scale
    (the astronaut test photo, cut out and enlarged, comes back framed
    differently), while MTCNN's keypoints, which :data:`FER_TEMPLATE` was
    measured with, come back where they were. One MTCNN batch, one view a face.
    """
    chosen = [i for i, f in enumerate(faces) if f.detector == "centerface"]
    if not chosen:
        return faces
    angles = [faces[i].eye_angle() or 0.0 for i in chosen]
    views = [_turned_view(rgb, faces[i].box, angle) for i, angle in zip(chosen, angles)]
    best: dict[int, Face] = {}
    for k, face in _detect_mtcnn_batch([view for view, _ in views], MTCNN_MIN_SCORE):
        if k not in best or face.score > best[k].score:
            best[k] = face
    out = list(faces)
    for k, face in best.items():
        mapped = _framed(_map_face(face, views[k][1], angles[k]))
        if box_iou(mapped.box, faces[chosen[k]].box) > _OVERLAP:
            out[chosen[k]] = mapped
    return out


def _turned_view(rgb: np.ndarray, box: tuple[float, float, float, float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(RECHECK_SIZE, RECHECK_SIZE) view of the area around ``box``, turned ``angle`` degrees (counter-clockwise).

    Returns the view and the 2x3 map from its edge coordinates back to the
    photo's. A view smaller than its area is area-averaged first (a plain
    warp would alias); the border is replicated.
    """
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    scale = RECHECK_SIZE / (RECHECK_CONTEXT * max(w, h, 1.0))
    reach = RECHECK_SIZE / scale * 0.75  # half the view's diagonal, in photo pixels, and a margin
    ph, pw = rgb.shape[:2]
    x0, y0 = int(np.clip(np.floor(cx - reach), 0, pw - 1)), int(np.clip(np.floor(cy - reach), 0, ph - 1))
    x1, y1 = int(np.clip(np.ceil(cx + reach), x0 + 1, pw)), int(np.clip(np.ceil(cy + reach), y0 + 1, ph))
    region = rgb[y0:y1, x0:x1]
    fx = fy = 1.0
    if scale < 1.0:
        rw, rh = max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))
        fx, fy = rw / region.shape[1], rh / region.shape[0]
        region = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
    # Edge coordinates: photo -> region, then turn about the box centre, scale and centre the view.
    to_region = np.array([[fx, 0.0, -fx * x0], [0.0, fy, -fy * y0], [0.0, 0.0, 1.0]])
    turn = cv2.getRotationMatrix2D((0.0, 0.0), angle, scale / np.sqrt(fx * fy))
    centre = to_region @ np.array([cx, cy, 1.0])
    m = np.vstack([turn, [0.0, 0.0, 1.0]]) @ np.array([[1.0, 0.0, -centre[0]], [0.0, 1.0, -centre[1]], [0.0, 0.0, 1.0]])
    m[:2, 2] += RECHECK_SIZE / 2
    # cv2 maps pixel centres: t' = t + A (0.5, 0.5) - 0.5.
    warp = m[:2].copy()
    warp[:, 2] += warp[:, :2] @ np.array([0.5, 0.5]) - 0.5
    view = cv2.warpAffine(region, warp, (RECHECK_SIZE, RECHECK_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return view, cv2.invertAffineTransform((m @ to_region)[:2])


def _map_face(face: Face, back: np.ndarray, angle: float) -> Face:
    """A face found in a turned, scaled view, in photo coordinates (the box stays upright in the view's frame)."""
    x, y, w, h = face.box
    size = float(np.sqrt(abs(np.linalg.det(back[:, :2]))))
    cx, cy = back @ np.array([x + w / 2, y + h / 2, 1.0])
    kps = None
    if face.keypoints:
        kps = {k: tuple(float(v) for v in back @ np.array([px, py, 1.0])) for k, (px, py) in face.keypoints.items()}
    return Face((float(cx - w * size / 2), float(cy - h * size / 2), w * size, h * size), face.score, kps, face.detector, angle)


def _detect_once(rgb: np.ndarray, detector: str, min_score: float, max_side: int) -> list[Face]:
    if detector == "mtcnn":
        return [face for _, face in _detect_mtcnn_batch([rgb], min_score)]
    if detector == "centerface":
        return _detect_centerface(rgb, min_score, max_side)
    return _detect_haar(rgb, min_score)


def _detect_rotated(rgb: np.ndarray, detector: str, min_score: float, angle: float, max_side: int) -> list[Face]:
    """Faces found in the photo turned by ``angle`` degrees, in the unturned photo's coordinates."""
    if angle % 360 == 0:
        return _detect_once(rgb, detector, min_score, max_side)
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos))
    m[:, 2] += (nw - w) / 2, (nh - h) / 2  # grow the canvas so no corner is cut off
    turned = cv2.warpAffine(rgb, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    back = cv2.invertAffineTransform(m)
    out = []
    for face in _detect_once(turned, detector, min_score, max_side):
        x, y, bw, bh = face.box
        cx, cy = back @ np.array([x + bw / 2, y + bh / 2, 1.0])
        if not (0 <= cx < w and 0 <= cy < h):  # a face seen in the mirrored border
            continue
        kps = None
        if face.keypoints:
            kps = {k: tuple(float(v) for v in back @ np.array([px, py, 1.0])) for k, (px, py) in face.keypoints.items()}
        out.append(Face((float(cx - bw / 2), float(cy - bh / 2), bw, bh), face.score, kps, face.detector, angle))
    return out


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes: how detections are matched."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _merge(kept: list[Face], new: list[Face], overlap: float = 0.4) -> list[Face]:
    """Union of two detection lists; of two faces that overlap, the higher score stays."""
    out = list(kept)
    for face in new:
        clash = [i for i, k in enumerate(out) if box_iou(k.box, face.box) > overlap]
        if not clash:
            out.append(face)
        elif all(face.score > out[i].score for i in clash):
            out = [k for i, k in enumerate(out) if i not in clash] + [face]
    return out


def _scale_face(face: Face, sx: float, sy: float) -> Face:
    if sx == 1.0 and sy == 1.0:
        return face
    x, y, w, h = face.box
    kps = None if face.keypoints is None else {k: (px * sx, py * sy) for k, (px, py) in face.keypoints.items()}
    return Face((x * sx, y * sy, w * sx, h * sy), face.score, kps, face.detector, face.angle)


def _detect_mtcnn_batch(images: list[np.ndarray], min_score: float) -> list[tuple[int, Face]]:
    """(image index, face) for every face MTCNN finds at ``min_score`` in a list of images, run as one batch."""
    if not images or min(min(image.shape[:2]) for image in images) < 12:  # below MTCNN's smallest window
        return []
    model = _mtcnn()
    with _MTCNN_RUN_LOCK:
        rows = model.detect_faces(images, output_type="numpy", box_format="xyxy", **MTCNN_OPTIONS)
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 16)
    faces = []
    # Row layout (mtcnn 1.0): image index, x1, y1, x2, y2, score, then the five
    # keypoints' x (columns 6-10) and y (11-15) in KEYPOINTS order.
    for row in rows:
        score = float(row[5])
        if score < min_score:
            continue
        x1, y1, x2, y2 = row[1:5]
        kps = {name: (float(row[6 + i]), float(row[11 + i])) for i, name in enumerate(KEYPOINTS)}
        faces.append((int(row[0]), Face((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), score, kps, "mtcnn")))
    return faces


def _detect_centerface(rgb: np.ndarray, min_score: float, max_side: int) -> list[Face]:
    boxes, scores, points = centerface.detect(rgb, min_score, long_side=max_side)
    return [
        Face(tuple(float(v) for v in box), float(score), {k: (float(x), float(y)) for k, (x, y) in zip(KEYPOINTS, kps)}, "centerface")
        for box, score, kps in zip(boxes, scores, points)
    ]


def _detect_haar(rgb: np.ndarray, min_score: float) -> list[Face]:
    grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    side = min(grey.shape)
    min_size = max(20, side // 25)
    boxes, _, weights = _haar().detectMultiScale3(
        grey, scaleFactor=1.1, minNeighbors=HAAR_MIN_NEIGHBOURS, minSize=(min_size, min_size), outputRejectLevels=True
    )
    faces = []
    for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
        if weight >= min_score:
            faces.append(Face((float(x), float(y), float(w), float(h)), float(weight), None, "haar"))
    return faces


# ---------------------------------------------------------------------------
# Alignment to the FER2013 frame
# ---------------------------------------------------------------------------

# Where FER2013 puts a face, in 48-px edge coordinates (x right, y down; pixel i
# spans [i, i+1]). Measured by `python bench/photo_path.py --measure-template`:
# 500 random FER2013 Training faces (seed 0) upscaled 4x (bicubic) to 192x192,
# padded by 48 px of replicated border so faces touching the frame still get
# found, run through MTCNN; of the 426 faces found with score >= 0.9, the
# median of each keypoint, divided by 4. Raw medians:
#   left eye (15.14, 18.69)  right eye (32.62, 18.47)  nose (24.09, 28.30)
#   mouth left (16.63, 37.21)  mouth right (31.36, 36.78)
#   inter-ocular distance 17.5 px (10th-90th percentile 12.7-20.5);
#   eye angle median -0.8 deg; eyes-to-mouth 18.3 px.
# The template below is those medians made left-right symmetric about the
# eyes' midpoint (x = 23.88), so a mirrored face gets the mirrored crop.
FER_TEMPLATE: dict[str, tuple[float, float]] = {
    "left_eye": (15.14, 18.58),
    "right_eye": (32.62, 18.58),
    "nose": (23.88, 28.30),
    "mouth_left": (16.52, 37.00),
    "mouth_right": (31.24, 37.00),
}
FER_EYE_DISTANCE = 17.48  # px between the template's eyes
# Each keypoint detector places its points a little differently (where an
# "eye" or a "mouth corner" is), so each gets its own template, measured the
# same way on the same 500 faces. CenterFace (436 found at score >= 0.5, the
# faces tiled six to a photo) puts the eyes 0.6 px lower and the mouth 1.2 px
# higher than MTCNN: with MTCNN's template its crops would be zoomed in by 5%.
CENTERFACE_TEMPLATE: dict[str, tuple[float, float]] = {
    "left_eye": (15.11, 19.18),
    "right_eye": (32.77, 19.18),
    "nose": (23.94, 28.61),
    "mouth_left": (16.74, 35.85),
    "mouth_right": (31.13, 35.85),
}
TEMPLATES: dict[str, dict[str, tuple[float, float]]] = {"mtcnn": FER_TEMPLATE, "centerface": CENTERFACE_TEMPLATE}

# Without keypoints (Haar, or a fallback) the box alone places the crop. Where a
# detector's box falls in the 48-px FER2013 frame, as (x0, y0, x1, y1) edge
# coordinates, measured in the same run: the median box of OpenCV's Haar
# cascade as detect_faces runs it (368 of the 500 faces found) is
# (0.5, 0.5)-(47.5, 47.0): the Haar box *is* the FER2013 frame, margin 0.
# MTCNN's median box (4.8, -0.6)-(42.6, 49.1) is taller than wide and is used
# only if MTCNN ever gives no keypoints. Fallback boxes map onto the frame.
BOX_FRAMES: dict[str, tuple[float, float, float, float]] = {
    "haar": (0.5, 0.5, 47.5, 47.0),
    "mtcnn": (4.8, -0.6, 42.6, 49.1),
    "whole": (0.0, 0.0, 48.0, 48.0),
    "centre": (0.0, 0.0, 48.0, 48.0),
    "given": (0.0, 0.0, 48.0, 48.0),
}
_SUPERSAMPLE = 4  # a shrinking warp runs at 4x, then area-averages to 48: no aliasing


def face_transform(face: Face) -> np.ndarray:
    """2x3 affine matrix from photo edge coordinates to the 48-px FER2013 frame.

    With keypoints: the rotation that levels the eyes (angle from the two eye
    keypoints), then the scale and shift that put all five keypoints closest
    (least squares) to the template of the detector that found them
    (:data:`TEMPLATES`). Using all five points instead of
    the eyes alone keeps the scale right for a face turned sideways (its eyes
    look closer together) or nodding (eyes and mouth look closer).
    Without keypoints: the box is mapped onto its detector's :data:`BOX_FRAMES`
    (a non-square fallback box is stretched, like a plain resize).
    """
    m = _keypoint_transform(face)
    return _box_transform(face) if m is None else m


def _keypoint_transform(face: Face) -> np.ndarray | None:
    """:func:`face_transform` from the keypoints; None without keypoints or when they are degenerate."""
    if not face.keypoints:
        return None
    template = TEMPLATES.get(face.detector, FER_TEMPLATE)
    src = np.array([face.keypoints[k] for k in KEYPOINTS], dtype=np.float64)
    dst = np.array([template[k] for k in KEYPOINTS], dtype=np.float64)
    angle = np.arctan2(src[1, 1] - src[0, 1], src[1, 0] - src[0, 0])
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    p = src @ rot.T
    p_mean, q_mean = p.mean(axis=0), dst.mean(axis=0)
    pc, qc = p - p_mean, dst - q_mean
    denom = float((pc**2).sum())
    if denom < 1e-9 or not np.isfinite(denom):
        return None
    scale = float((pc * qc).sum()) / denom
    if scale <= 0:
        return None
    shift = q_mean - scale * p_mean
    return np.hstack([scale * rot, shift[:, None]])


def crop_box(face: Face) -> tuple[float, float, float, float]:
    """The upright square (x, y, w, h) in photo pixels that the face's aligned 48x48 crop covers.

    Same centre and side as the crop (which is turned by the eye angle; the
    outline drawn on the photo is :func:`crop_outline`); framed like FER2013,
    the box that matches a FER2013 face's own 48x48 frame, whatever the
    detector's own box convention (MTCNN's is narrower and taller,
    CenterFace's larger), so overlaps between detectors mean the same.
    """
    m = face_transform(face)
    cx, cy = cv2.invertAffineTransform(m) @ np.array([SIZE / 2, SIZE / 2, 1.0])
    side = SIZE / float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    return (float(cx - side / 2), float(cy - side / 2), side, side)


def crop_outline(face: Face) -> np.ndarray:
    """(4, 2) photo coordinates of the aligned crop's corners: top-left, top-right, bottom-right, bottom-left.

    The outline drawn on the photo: the crop is turned by the eye angle (and,
    without keypoints, framed around the detector's box), so an upright box
    would show a user other pixels than the model got.
    """
    frame = np.array([[0.0, 0.0], [SIZE, 0.0], [SIZE, SIZE], [0.0, SIZE]])
    back = cv2.invertAffineTransform(face_transform(face))  # (2, 3): 48-px frame -> photo
    return frame @ back[:, :2].T + back[:, 2]


def _box_transform(face: Face) -> np.ndarray:
    x, y, w, h = face.box
    fx0, fy0, fx1, fy1 = BOX_FRAMES.get(face.detector, BOX_FRAMES["given"])
    ax = (fx1 - fx0) / max(w, 1e-6)
    ay = (fy1 - fy0) / max(h, 1e-6)
    m = np.array([[ax, 0.0, fx0 - ax * x], [0.0, ay, fy0 - ay * y]])
    if face.angle:
        # The box is upright in the photo turned by face.angle about the box centre.
        turn = np.vstack([cv2.getRotationMatrix2D((x + w / 2, y + h / 2), face.angle, 1.0), [0.0, 0.0, 1.0]])
        m = m @ turn
    return m


def align_face(rgb: np.ndarray, face: Face, size: int = SIZE) -> np.ndarray:
    """(size, size) uint8 grey crop of one face, framed like FER2013 (eyes level)."""
    rgb = _as_rgb(rgb)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # BT.601 weights, as PIL's "L" used for FER2013-style loading
    m = face_transform(face) * (size / SIZE)
    # Shrinking: warp at 4x the output size, then area-average down (no
    # aliasing). Same size or enlarging: warp straight to the output, so an
    # image that already is the crop comes back pixel for pixel.
    ss = _SUPERSAMPLE if np.sqrt(abs(np.linalg.det(m[:, :2]))) < 0.999 else 1
    m_out = m * ss  # edge coordinates of the (supersampled) output
    out = size * ss

    # Source region that the output frame covers (plus 2 px for interpolation).
    inv = cv2.invertAffineTransform(m_out)
    corners = np.array([[0, 0, 1], [out, 0, 1], [0, out, 1], [out, out, 1]], dtype=np.float64) @ inv.T
    h, w = grey.shape
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 2, x0 + 1, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 2, y0 + 1, h))
    region = grey[y0:y1, x0:x1]
    m_out = m_out.copy()
    m_out[:, 2] += m_out[:, :2] @ np.array([x0, y0], dtype=np.float64)

    # A face much larger than the output: shrink its region by area averaging
    # first, so the warp does not alias (bilinear samples only 4 pixels).
    scale = float(np.sqrt(abs(np.linalg.det(m_out[:, :2]))))
    if scale < 0.8:
        rw = max(1, int(round(region.shape[1] * scale)))
        rh = max(1, int(round(region.shape[0] * scale)))
        fx, fy = region.shape[1] / rw, region.shape[0] / rh
        region = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
        m_out = m_out @ np.array([[fx, 0, 0], [0, fy, 0], [0, 0, 1]], dtype=np.float64)

    # cv2 maps pixel centres: convert edge-coordinate matrix M (q = A p + t) to
    # centre coordinates: t' = t + A (0.5, 0.5) - 0.5.
    centre = m_out.copy()
    centre[:, 2] += m_out[:, :2] @ np.array([0.5, 0.5]) - 0.5
    warped = cv2.warpAffine(
        region, centre, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if ss == 1:
        return warped
    return cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------
# Whole photos, fallbacks, drawing
# ---------------------------------------------------------------------------

FACE_CROP_MAX_SIDE = 96
FACE_CROP_MIN_SIDE = 24


def _is_grey(rgb: np.ndarray, tolerance: int = 8) -> bool:
    rgb = _as_rgb(rgb).astype(np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return bool(np.percentile(spread, 99) <= tolerance)  # JPEG chroma noise leaves a few units


def is_face_crop(rgb: np.ndarray) -> bool:
    """True for an image that already is a FER2013-style face: 48x48, or small square grey.

    Such an image is the face, framed already; running a detector on it would
    only fail (a face that fills the frame has no context for the detector)
    or crop it a second time.
    """
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    if h != w:
        return False
    if h == SIZE:
        return True
    return FACE_CROP_MIN_SIDE <= h <= FACE_CROP_MAX_SIDE and _is_grey(rgb)


def whole_image_face(rgb: np.ndarray) -> Face:
    """The whole photo as one face (the "no face found, use it all" fallback)."""
    h, w = np.asarray(rgb).shape[:2]
    return Face((0.0, 0.0, float(w), float(h)), 0.0, None, "whole")


def centre_crop_face(rgb: np.ndarray) -> Face:
    """The largest centred square as one face (the "no face found, use the middle" fallback)."""
    h, w = np.asarray(rgb).shape[:2]
    side = min(h, w)
    return Face((float((w - side) // 2), float((h - side) // 2), float(side), float(side)), 0.0, None, "centre")


@dataclass
class PhotoFaces:
    """A decoded photo and what was found in it.

    rgb: (H, W, 3) uint8, upright. faces: left to right. crops: (N, 48, 48)
    uint8, one per face, in the same order. skipped_detection: the photo was a
    face crop already (see :func:`is_face_crop`) and is its own single face.
    """

    rgb: np.ndarray
    faces: list[Face]
    crops: np.ndarray = field(default_factory=lambda: np.zeros((0, SIZE, SIZE), np.uint8))
    skipped_detection: bool = False


RETRY_ROTATIONS = (-30.0, 30.0)


def faces_in_photo(data: bytes, detector: str = DEFAULT_DETECTOR, retry_rotated: bool = True) -> PhotoFaces:
    """Decode a photo, find its faces and align each; PhotoError for a bad file.

    ``retry_rotated``: when the upright pass finds nothing, look again in the
    photo turned by :data:`RETRY_ROTATIONS` (strongly tilted heads). It costs
    two more detections, only on photos that would otherwise have no face.
    """
    rgb = load_photo(data)
    return faces_in_rgb(rgb, detector=detector, retry_rotated=retry_rotated)


def faces_in_rgb(rgb: np.ndarray, detector: str = DEFAULT_DETECTOR, retry_rotated: bool = True) -> PhotoFaces:
    """:func:`faces_in_photo` for an already decoded RGB array."""
    rgb = _as_rgb(rgb)
    if is_face_crop(rgb):
        face = whole_image_face(rgb)
        return PhotoFaces(rgb, [face], align_face(rgb, face)[None], skipped_detection=True)
    faces = detect_faces(rgb, detector=detector)
    if not faces and retry_rotated:
        faces = detect_faces(rgb, detector=detector, rotations=RETRY_ROTATIONS)
    crops = np.stack([align_face(rgb, f) for f in faces]) if faces else np.zeros((0, SIZE, SIZE), np.uint8)
    return PhotoFaces(rgb, faces, crops, skipped_detection=False)


_BOX_COLOUR = (255, 64, 32)


def draw_boxes(rgb: np.ndarray, faces: list[Face], colour: tuple[int, int, int] = _BOX_COLOUR) -> np.ndarray:
    """A copy of the photo with each face's crop outlined (:func:`crop_outline`) and numbered 1, 2, ... in list order."""
    out = _as_rgb(rgb).copy()
    h, w = out.shape[:2]
    thick = max(2, round(max(h, w) / 400))
    font_scale = max(0.5, max(h, w) / 900)
    for number, face in enumerate(faces, start=1):
        corners = crop_outline(face)
        cv2.polylines(out, [np.round(corners).astype(np.int32)], True, colour, thick, cv2.LINE_AA)
        x, y = (int(round(v)) for v in corners.min(axis=0))
        bottom = int(round(corners[:, 1].max()))
        label = str(number)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else min(h - 1, bottom + th + 4)
        tx = min(max(0, x), max(0, w - tw - 4))
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 4, ty + base), colour, -1)
        cv2.putText(out, label, (tx + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out
