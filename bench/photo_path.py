"""Benchmark the photo path (decode -> detect -> align -> predict) on synthetic photos of FER2013 faces.

    python bench/photo_path.py                       # detection figures for each candidate detector
    python bench/photo_path.py --model models/fer/RUN  # plus accuracy through the photo path (default detector)
    python bench/photo_path.py --photos 60 --detectors centerface,mtcnn+centerface@800  # a quick look
    python bench/photo_path.py --measure-template    # re-measure core.faces' keypoint templates

Test photos (built in memory, seeded, never written to the repo): FER2013
PublicTest faces composited onto backgrounds (scikit-image's bundled photos
with no people in them, colour gradients, noise), 1-4 faces a photo, face
frame 60-400 px, in-plane rotation up to +-25 degrees, per-face tint,
brightness and contrast, global brightness/contrast and sensor noise, then
JPEG at quality 40-95. Photo sizes 640x480 to 2048x1536, either orientation.

How a face is composited: a FER2013 face is cropped tightly (brows to chin),
so pasting the 48x48 square alone gives a detector a face with hard edges and
no head around it, which real photos never show. Each face is first extended
by 25% a side with a *mirrored* border (OpenCV reflect-101: hair, cheeks and
chin continue plausibly) that is blurred progressively away from the face,
and the whole patch is pasted with an alpha that is 1 over the 48x48 frame and
fades to 0 across that border, so the face sits in a soft head-shaped blob
and blends into the background. Ground truth is the 48x48 frame: its centre,
its size (an upright square of the frame's side) and, for alignment, the
template keypoints carried through the same placement.

A detection matches a ground-truth face at IoU >= 0.4 (greedy, best first);
unmatched detections are false positives ("framed": found, and framed the way
FER2013 framed that face). A second rule, "on the face" (:func:`on_face`),
asks only whether the face was found, whatever its framing. A face found with keypoints is
reported with the upright square its aligned crop covers (core.faces.crop_box;
the page draws that crop's turned outline, core.faces.crop_outline); a FER2013
face framed like the median one gives IoU 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from core import faces as F  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "fer2013" / "fer2013.csv.gz"
# scikit-image's bundled images without a person in them (astronaut and camera have one).
BACKGROUNDS = (
    "brick", "cell", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "moon", "page", "retina", "rocket", "text",
)
PHOTO_SIZES = ((640, 480), (800, 600), (1024, 768), (1280, 960), (1600, 1200), (2048, 1536))
PAD = 12  # mirrored context added on each side of the 48x48 face (25%)
IOU_MATCH = 0.4


# ---------------------------------------------------------------------------
# Template measurement
# ---------------------------------------------------------------------------


def measure_template(data_path: Path, n: int = 500, seed: int = 0) -> dict:
    """Median MTCNN keypoints (and Haar/MTCNN boxes) of FER2013 Training faces, in 48-px edge coordinates.

    Each face is upscaled 4x (bicubic) to 192x192 and given 48 px of replicated
    border, since a detector needs some context around a face that fills the
    image; coordinates are mapped back to the 48-px frame.
    """
    from core.data import load_dataset
    from mtcnn import MTCNN

    train = load_dataset(data_path).split("Training")
    idx = np.random.default_rng(seed).choice(len(train), n, replace=False)
    up, pad = 4, 48
    images = []
    for i in idx:
        g = cv2.resize(train.images[i], (48 * up, 48 * up), interpolation=cv2.INTER_CUBIC)
        g = cv2.copyMakeBorder(g, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        images.append(cv2.cvtColor(g, cv2.COLOR_GRAY2RGB))
    rows = np.asarray(MTCNN().detect_faces(images, output_type="numpy", box_format="xyxy")).reshape(-1, 16)
    points, boxes = [], []
    for k in range(n):
        mine = rows[rows[:, 0] == k]
        if len(mine) == 0:
            continue
        best = mine[np.argmax(mine[:, 5])]
        if best[5] < 0.9:
            continue
        points.append((np.stack([best[6:11], best[11:16]], axis=1) - pad) / up)
        boxes.append((best[1:5] - pad) / up)
    points, boxes = np.array(points), np.array(boxes)
    med = np.median(points, axis=0)
    iod = np.hypot(*(points[:, 1] - points[:, 0]).T)
    angle = np.degrees(np.arctan2(points[:, 1, 1] - points[:, 0, 1], points[:, 1, 0] - points[:, 0, 0]))
    eyes_mouth = (points[:, 3, 1] + points[:, 4, 1] - points[:, 0, 1] - points[:, 1, 1]) / 2

    haar_boxes = []
    for image in images:
        found = F.detect_faces(image, detector="haar")  # the same cascade settings the app uses
        if found:
            x, y, w, h = max(found, key=lambda f: f.box[2] * f.box[3]).box
            haar_boxes.append([(x - pad) / up, (y - pad) / up, (x + w - pad) / up, (y + h - pad) / up])
    haar_boxes = np.array(haar_boxes)

    print(f"FER2013 Training faces: {n} (seed {seed}); MTCNN found {len(points)} with score >= 0.9")
    print("| keypoint | median x | median y | IQR x | IQR y |")
    print("|---|---|---|---|---|")
    q25, q75 = np.percentile(points, 25, axis=0), np.percentile(points, 75, axis=0)
    for name, m, a, b in zip(F.KEYPOINTS, med, q25, q75):
        print(f"| {name} | {m[0]:.2f} | {m[1]:.2f} | {a[0]:.1f}-{b[0]:.1f} | {a[1]:.1f}-{b[1]:.1f} |")
    print(f"inter-ocular distance: median {np.median(iod):.2f} px, 10-90% {np.percentile(iod, 10):.1f}-{np.percentile(iod, 90):.1f}")
    print(f"eye angle: median {np.median(angle):+.2f} deg, median |angle| {np.median(np.abs(angle)):.2f} deg")
    print(f"eyes to mouth: median {np.median(eyes_mouth):.2f} px")
    print(f"MTCNN box median (x0, y0, x1, y1): {np.round(np.median(boxes, axis=0), 2).tolist()}")
    print(f"Haar box median (x0, y0, x1, y1), {len(haar_boxes)} found: {np.round(np.median(haar_boxes, axis=0), 2).tolist()}")
    _print_symmetric("MTCNN", med)
    cf_points = _centerface_points(images)
    found = ~np.isnan(cf_points[:, 0, 0])
    cf_med = np.median((cf_points[found] - pad) / up, axis=0)
    print(f"CenterFace found {found.sum()} of {n} with score >= 0.5; median keypoints:")
    for name, m in zip(F.KEYPOINTS, cf_med):
        print(f"| {name} | {m[0]:.2f} | {m[1]:.2f} |")
    _print_symmetric("CenterFace", cf_med)
    return {"median": med, "iod": float(np.median(iod)), "found": len(points), "haar_box": np.median(haar_boxes, axis=0)}


def _print_symmetric(name: str, med: np.ndarray) -> None:
    """The template for core.faces.TEMPLATES: medians made left-right symmetric about the eyes' midpoint."""
    mid = (med[0, 0] + med[1, 0]) / 2
    eye_y = (med[0, 1] + med[1, 1]) / 2
    half_eyes = (med[1, 0] - med[0, 0]) / 2
    half_mouth = (med[4, 0] - med[3, 0]) / 2
    mouth_y = (med[3, 1] + med[4, 1]) / 2
    print(f"{name} symmetric template:")
    print(f"  left_eye ({mid - half_eyes:.2f}, {eye_y:.2f})  right_eye ({mid + half_eyes:.2f}, {eye_y:.2f})  nose ({mid:.2f}, {med[2, 1]:.2f})")
    print(f"  mouth_left ({mid - half_mouth:.2f}, {mouth_y:.2f})  mouth_right ({mid + half_mouth:.2f}, {mouth_y:.2f})")


def _centerface_points(images: list[np.ndarray], cols: int = 3, rows: int = 2) -> np.ndarray:
    """(N, 5, 2) CenterFace keypoints (NaN: no face at score 0.5) of equal-sized images, several per pass.

    The images are tiled cols x rows into one photo, so CenterFace sees each
    face at about the scale it has on its own and the passes are few.
    """
    side = images[0].shape[0]
    out = np.full((len(images), 5, 2), np.nan)
    for first in range(0, len(images), cols * rows):
        group = images[first : first + cols * rows]
        sheet = np.zeros((rows * side, cols * side, 3), np.uint8)
        for k, image in enumerate(group):
            r, c = divmod(k, cols)
            sheet[r * side : (r + 1) * side, c * side : (c + 1) * side] = image
        best = np.zeros(len(group))
        for face in F.detect_faces(sheet, detector="centerface", min_score=0.5, recheck=False):
            x, y, w, h = face.box
            c, r = int((x + w / 2) // side), int((y + h / 2) // side)
            k = r * cols + c
            if 0 <= c < cols and k < len(group) and face.score > best[k]:
                best[k] = face.score
                out[first + k] = [np.subtract(face.keypoints[name], (c * side, r * side)) for name in F.KEYPOINTS]
    return out


# ---------------------------------------------------------------------------
# Synthetic photos
# ---------------------------------------------------------------------------


@dataclass
class Truth:
    box: tuple[float, float, float, float]  # upright square of the 48-px frame, photo pixels
    label: int
    index: int  # row in PublicTest
    keypoints: dict[str, tuple[float, float]]  # FER_TEMPLATE carried through the placement
    angle: float  # degrees of in-plane rotation applied


@dataclass
class Photo:
    jpeg: bytes
    size: tuple[int, int]
    truths: list[Truth] = field(default_factory=list)


def _load_backgrounds() -> list[np.ndarray]:
    from skimage import data

    out = []
    for name in BACKGROUNDS:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - an image this scikit-image lacks or would download
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = image[..., :3]
        if image.dtype != np.uint8:
            image = (255 * (image.astype(np.float64) / max(1e-9, float(image.max())))).astype(np.uint8)
        out.append(np.ascontiguousarray(image))
    return out


def _background(rng: np.random.Generator, w: int, h: int, library: list[np.ndarray]) -> np.ndarray:
    kind = rng.choice(["photo", "photo", "gradient", "noise"])
    if kind == "photo" and library:
        src = library[rng.integers(len(library))]
        # A random crop at a random zoom, resized to the photo.
        sh, sw = src.shape[:2]
        zoom = rng.uniform(0.5, 1.0)
        cw, ch = max(16, int(sw * zoom)), max(16, int(sh * zoom))
        ar = w / h
        if cw / ch > ar:
            cw = int(ch * ar)
        else:
            ch = int(cw / ar)
        x0, y0 = rng.integers(0, sw - cw + 1), rng.integers(0, sh - ch + 1)
        out = cv2.resize(src[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2) * 120 / max(w, h)
        out[..., c] = rng.uniform(40, 215) + a * xx + b * yy
    if kind == "noise":
        blob = cv2.resize(rng.normal(0, 40, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32), (w, h))
        out += blob + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(12)
    return np.clip(out, 0, 255).astype(np.uint8)


def _face_patch(face48: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(72, 72) grey face with mirrored, progressively blurred context, and its (72, 72) alpha."""
    big = cv2.copyMakeBorder(face48, PAD, PAD, PAD, PAD, cv2.BORDER_REFLECT_101).astype(np.float32)
    n = 48 + 2 * PAD
    centre = np.arange(n, dtype=np.float32) + 0.5
    # Distance (px) outside the 48x48 frame, per pixel (0 inside).
    d1 = np.maximum(0, np.maximum(PAD - centre, centre - (PAD + 48)))
    dist = np.hypot(d1[:, None], d1[None, :])
    blurred = cv2.GaussianBlur(big, (0, 0), 3.0)
    w = np.clip(dist / 4, 0, 1)  # sharp at the frame, fully blurred 4 px out
    patch = (1 - w) * big + w * blurred
    alpha = np.clip(1 - dist / PAD, 0, 1) ** 1.5
    alpha[dist == 0] = 1
    return patch, alpha


def _place(rng: np.random.Generator, w: int, h: int, side: float, taken: list[tuple[float, float, float]]):
    """A centre for a face frame of this side that keeps clear of the photo's edge and other faces."""
    reach = side * 0.75 * 1.42  # padded patch half-diagonal
    for _ in range(60):
        if w - 2 * reach * 0.7 <= 0 or h - 2 * reach * 0.7 <= 0:
            return None
        cx = rng.uniform(reach * 0.7, w - reach * 0.7)
        cy = rng.uniform(reach * 0.7, h - reach * 0.7)
        if all(np.hypot(cx - x, cy - y) > (reach + r) * 0.8 for x, y, r in taken):
            return cx, cy
    return None


def make_photo(rng: np.random.Generator, faces: np.ndarray, labels: np.ndarray, library: list[np.ndarray]) -> Photo:
    w, h = PHOTO_SIZES[rng.integers(len(PHOTO_SIZES))]
    if rng.random() < 0.3:
        w, h = h, w
    canvas = _background(rng, w, h, library).astype(np.float32)
    want = int(rng.integers(1, 5))
    taken: list[tuple[float, float, float]] = []
    truths: list[Truth] = []
    for _ in range(want):
        top = min(400.0, min(w, h) / 1.6)
        side = float(np.exp(rng.uniform(np.log(60), np.log(max(61.0, top)))))
        spot = _place(rng, w, h, side, taken)
        if spot is None:
            continue
        cx, cy = spot
        index = int(rng.integers(len(faces)))
        angle = float(rng.uniform(-25, 25))
        patch, alpha = _face_patch(faces[index])
        # Appearance: skin-ish tint, contrast and brightness of this face.
        contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(-30, 30)
        mean = patch[PAD:-PAD, PAD:-PAD].mean()
        patch = (patch - mean) * contrast + mean + brightness
        tint = np.array([1.0, rng.uniform(0.78, 0.95), rng.uniform(0.6, 0.9)], np.float32)
        tint = 1 + (tint - 1) * rng.uniform(0, 1)
        patch_rgb = np.clip(patch[..., None] * tint, 0, 255)

        # Placement: patch edge coords u -> photo p = s R(theta) (u - 36) + c,
        # theta counter-clockwise on screen (y down), like cv2.getRotationMatrix2D.
        s = side / 48.0
        t = np.radians(angle)
        lin = s * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        half = (48 + 2 * PAD) / 2
        reach = int(np.ceil(half * s * 1.42)) + 2
        x0, y0 = int(cx) - reach, int(cy) - reach
        x1, y1 = int(cx) + reach, int(cy) + reach
        ox, oy = max(0, x0), max(0, y0)
        ex, ey = min(w, x1), min(h, y1)
        # Matrix in pixel-centre coordinates, relative to the region's corner.
        shift = lin @ np.array([0.5 - half, 0.5 - half]) + np.array([cx, cy]) - 0.5 - np.array([ox, oy])
        m = np.hstack([lin, shift[:, None]])
        size = (ex - ox, ey - oy)
        warped = cv2.warpAffine(patch_rgb.astype(np.float32), m, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        a = cv2.warpAffine(alpha.astype(np.float32), m, size, flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
        region = canvas[oy:ey, ox:ex]
        canvas[oy:ey, ox:ex] = a * warped + (1 - a) * region

        kps = {}
        for name, (tx, ty) in F.FER_TEMPLATE.items():
            px, py = lin @ np.array([tx - 24.0, ty - 24.0]) + np.array([cx, cy])
            kps[name] = (float(px), float(py))
        truths.append(Truth((cx - side / 2, cy - side / 2, side, side), int(labels[index]), index, kps, angle))
        taken.append((cx, cy, side * 0.75 * 1.42))

    # The camera: global exposure and contrast, sensor noise, JPEG.
    canvas = (canvas - 128) * rng.uniform(0.85, 1.15) + 128 + rng.uniform(-15, 15)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(0, 4))
    rgb = np.clip(canvas, 0, 255).astype(np.uint8)
    quality = int(rng.integers(40, 96))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return Photo(buf.tobytes(), (w, h), truths)


def make_photos(data_path: Path, n: int, seed: int) -> tuple[list[Photo], np.ndarray, np.ndarray]:
    from core.data import load_dataset

    test = load_dataset(data_path).split("PublicTest")
    library = _load_backgrounds()
    rng = np.random.default_rng(seed)
    photos = [make_photo(rng, test.images, test.labels, library) for _ in range(n)]
    return photos, test.images, test.labels


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def on_face(truth: Truth, face: F.Face) -> float:
    """How well a box sits on a face whatever its framing: 1 - centre distance / half the frame's side, or -1.

    FER2013's own framing varies (inter-ocular distance 12.7-20.5 px in the
    48x48 frame, 10th-90th percentile), and a detector frames every face the
    median way, so a face small in its frame gets a box that overlaps the frame
    at IoU < 0.4 though it sits on the face. This rule asks only whether the
    face was found: the box's centre inside the frame and its side 0.5-2x the
    frame's.
    """
    tx, ty, ts, _ = truth.box
    fx, fy, fw, fh = face.box
    dx, dy = fx + fw / 2 - (tx + ts / 2), fy + fh / 2 - (ty + ts / 2)
    side = (fw * fh) ** 0.5
    if max(abs(dx), abs(dy)) > ts / 2 or not 0.5 <= side / ts <= 2:
        return -1.0
    return 1 - np.hypot(dx, dy) / (ts / 2)


RULES = {"framed": lambda t, f: F.box_iou(t.box, f.box) - IOU_MATCH, "on_face": on_face}


def match(truths: list[Truth], faces: list[F.Face], rule: str = "framed") -> dict[int, int]:
    """Greedy matching, best pair first: truth index -> face index.

    ``rule``: "framed" (IoU >= 0.4 with the face's 48-px frame: found *and*
    framed like FER2013 framed it) or "on_face" (see :func:`on_face`).
    """
    score = RULES[rule]
    pairs = sorted(((score(t, f), i, j) for i, t in enumerate(truths) for j, f in enumerate(faces)), reverse=True)
    out: dict[int, int] = {}
    used: set[int] = set()
    for value, i, j in pairs:
        if value < 0:
            break
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def crop_correlation(crop: np.ndarray, original: np.ndarray) -> float:
    """Pixel correlation of an aligned crop with the FER2013 face it came from (1: same framing)."""
    a, b = crop.astype(np.float64).ravel(), original.astype(np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class Run:
    name: str
    detector: str
    max_side: int | None  # None: each detector's default (core.faces)
    faces: list[list[F.Face]]
    detect_ms: np.ndarray
    detect_cpu_ms: np.ndarray  # CPU time of the process during detection (all threads)
    total_ms: np.ndarray  # decode + detect + align every face
    crops: list[np.ndarray]
    ceiling: float = float("nan")  # share of the faces it finds on their own (MTCNN only)


def standalone_recall(photos: list[Photo], images48: np.ndarray, recheck: bool) -> tuple[float, int]:
    """Share of the benchmark's distinct faces MTCNN finds on their own: 4x upscaled, mirrored border.

    The ceiling for recall in the photos: a face the detector cannot find
    alone (hands over it, extreme tilt, cut off by FER2013's tight crop,
    posterized) it will not find in a photo either.
    """
    indices = sorted({t.index for p in photos for t in p.truths})
    found = 0
    for i in indices:
        g = cv2.resize(images48[i], (192, 192), interpolation=cv2.INTER_CUBIC)
        g = cv2.copyMakeBorder(g, 48, 48, 48, 48, cv2.BORDER_REFLECT_101)
        found += bool(F.detect_faces(cv2.cvtColor(g, cv2.COLOR_GRAY2RGB), recheck=recheck))
    return found / len(indices), len(indices)


def run_detector(
    photos: list[Photo], detector: str, max_side: int | None = None, rotations: tuple[float, ...] = (0.0,), recheck: bool = True
) -> Run:
    """Detect in every photo at the detector's operating scores (core.faces defaults)."""
    F.warm_up(detector)
    all_faces, detect_ms, cpu_ms, total_ms, crops = [], [], [], [], []
    for photo in photos:
        t0 = time.perf_counter()
        rgb = F.load_photo(photo.jpeg)
        t1, c1 = time.perf_counter(), time.process_time()
        faces = F.detect_faces(rgb, detector=detector, max_side=max_side, rotations=rotations, recheck=recheck)
        t2, c2 = time.perf_counter(), time.process_time()
        aligned = [F.align_face(rgb, f) for f in faces]
        t3 = time.perf_counter()
        all_faces.append(faces)
        crops.append(np.stack(aligned) if aligned else np.zeros((0, 48, 48), np.uint8))
        detect_ms.append((t2 - t1) * 1000)
        cpu_ms.append((c2 - c1) * 1000)
        total_ms.append((t3 - t0) * 1000)
    name = detector if max_side is None else f"{detector}@{max_side}"
    return Run(name, detector, max_side, all_faces, np.array(detect_ms), np.array(cpu_ms), np.array(total_ms), crops)


def detection_rows(photos: list[Photo], run: Run, thresholds: list[float], images48: np.ndarray) -> list[dict]:
    rows = []
    truths = [t for p in photos for t in p.truths]
    sides = np.array([t.box[2] for t in truths])
    tilts = np.array([abs(t.angle) for t in truths])
    for threshold in thresholds:
        hit = np.zeros(len(truths), bool)
        on = np.zeros(len(truths), bool)
        false_pos = false_off = background = 0
        corrs = []
        k = 0
        for photo, faces, crops in zip(photos, run.faces, run.crops):
            kept = [j for j, f in enumerate(faces) if f.score >= threshold]
            pairs = match(photo.truths, [faces[j] for j in kept])
            on_pairs = match(photo.truths, [faces[j] for j in kept], rule="on_face")
            on[[k + i for i in on_pairs]] = True
            false_pos += len(kept) - len(pairs)
            false_off += len(kept) - len(on_pairs)
            background += sum(all(F.box_iou(faces[j].box, t.box) < 0.05 for t in photo.truths) for j in kept)
            for i, j in pairs.items():
                hit[k + i] = True
                corrs.append(crop_correlation(crops[kept[j]], images48[photo.truths[i].index]))
            k += len(photo.truths)
        rows.append(
            {
                "name": run.name,
                "threshold": threshold,
                "recall": hit.mean(),
                "small": hit[sides < 100].mean(),
                "medium": hit[(sides >= 100) & (sides < 200)].mean(),
                "large": hit[sides >= 200].mean(),
                "tilted": hit[tilts > 15].mean(),
                "fp_per_photo": false_pos / len(photos),
                "found": on.mean(),
                "fp_off_face": false_off / len(photos),
                "background_per_photo": background / len(photos),
                "corr": float(np.median(corrs)) if corrs else float("nan"),
            }
        )
    return rows


def predict(model, images: np.ndarray) -> np.ndarray:
    if len(images) == 0:
        return np.zeros((0,), np.int64)
    probs = model.predict(images[..., None].astype(np.float32), batch_size=256, verbose=0)
    return np.asarray(probs).argmax(axis=1)


def accuracy_rows(photos: list[Photo], run: Run, model, images48: np.ndarray) -> dict[str, dict]:
    """Accuracy figures per match rule (``RULES``); every face and crop is predicted once."""
    truths = [t for p in photos for t in p.truths]
    labels = np.array([t.label for t in truths])
    direct = predict(model, images48[[t.index for t in truths]]) == labels

    # Oracle: crop each face with its true placement (what perfect detection gives).
    oracle_crops = []
    for photo in photos:
        rgb = F.load_photo(photo.jpeg)
        for t in photo.truths:
            oracle_crops.append(F.align_face(rgb, F.Face(t.box, 1.0, t.keypoints, "truth")))
    oracle = predict(model, np.stack(oracle_crops)) == labels

    # Every detected face's answer, by photo: the rules only choose which face answers which truth.
    answers = np.split(predict(model, np.concatenate(run.crops)), np.cumsum([len(c) for c in run.crops])[:-1])
    rows = {}
    for rule in RULES:
        path = np.zeros(len(truths), bool)
        found = np.zeros(len(truths), bool)
        k = 0
        for photo, faces, photo_answers in zip(photos, run.faces, answers):
            for i, j in match(photo.truths, faces, rule).items():
                found[k + i] = True
                path[k + i] = photo_answers[j] == labels[k + i]
            k += len(photo.truths)
        rows[rule] = {
            "faces": len(truths),
            "found": int(found.sum()),
            "direct": direct.mean() * 100,
            "oracle": oracle.mean() * 100,
            "path_all": path.mean() * 100,
            "path_found": path[found].mean() * 100 if found.any() else float("nan"),
            "direct_found": direct[found].mean() * 100 if found.any() else float("nan"),
        }
    return rows


def save_examples(photos: list[Photo], run: Run, folder: Path, count: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (photo, faces, crops) in enumerate(zip(photos[:count], run.faces, run.crops)):
        rgb = F.load_photo(photo.jpeg)
        drawn = F.draw_boxes(rgb, faces)
        for t in photo.truths:
            x, y, w, h = (int(round(v)) for v in t.box)
            cv2.rectangle(drawn, (x, y), (x + w, y + h), (0, 255, 0), 2)
        cv2.imwrite(str(folder / f"photo{i}.jpg"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        if len(crops):
            cv2.imwrite(str(folder / f"crops{i}.png"), np.hstack([cv2.resize(c, (96, 96)) for c in crops]))


def parse_spec(spec: str) -> tuple[str, int | None, list[str]]:
    """'mtcnn+centerface@1024+norecheck' -> ('mtcnn+centerface', 1024, ['norecheck']): detector parts, max side, options."""
    parts, side, options = [], None, []
    for token in spec.split("+"):
        name, _, at = token.partition("@")
        if name in F.DETECTOR_PARTS:
            parts.append(name)
            side = int(at) if at else side
        else:
            options.append(token)
    if not parts:
        raise SystemExit(f"--detectors: no detector in {spec!r}; use {', '.join(F.DETECTOR_PARTS)}")
    return "+".join(parts), side, options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FER2013 CSV (gz)")
    parser.add_argument("--photos", type=int, default=300, help="test photos to build (fewer for a quick look)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="a run folder (packed too) or a .keras model: (N, 48, 48, 1) grey 0..255 -> 7 probabilities")
    parser.add_argument(
        "--detectors",
        default=f"haar,mtcnn,centerface,{F.DEFAULT_DETECTOR}",
        help="comma-separated candidates, each detector[@max_side][+detector...][+option...], e.g. mtcnn+centerface "
        "(a union) or mtcnn@800+norecheck; options: rot (also look in the photo turned +-30 deg), norecheck (no second "
        "look at doubtful boxes), pnet=, rnet=, minface= (mtcnn settings; default: core.faces.MTCNN_OPTIONS), "
        "looks= (boxes a photo that get a second look, core.faces.RECHECK_MAX), doubt= (CenterFace score from which a "
        "box gets one, core.faces.CENTERFACE_DOUBT_SCORE). "
        f"Accuracy is reported for the first candidate that is the app's default ({F.DEFAULT_DETECTOR}), else the last.",
    )
    parser.add_argument("--measure-template", action="store_true", help="measure FER2013's keypoint framing and stop")
    parser.add_argument("--examples", type=Path, help="write a few annotated photos (default detector) and their crops here")
    args = parser.parse_args(argv)

    if not args.data.exists():
        print(f"FER2013 not found at {args.data}: pass --data", file=sys.stderr)
        return 2
    if args.measure_template:
        measure_template(args.data)
        return 0

    start = time.perf_counter()
    photos, images48, _ = make_photos(args.data, args.photos, args.seed)
    n_truth = sum(len(p.truths) for p in photos)
    print(
        f"{len(photos)} photos, {n_truth} faces (seed {args.seed}), built in {time.perf_counter() - start:.0f} s; "
        f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}"
    )

    runs = []
    defaults = dict(F.MTCNN_OPTIONS)
    default_looks, default_doubt = F.RECHECK_MAX, F._DOUBT_SCORES["centerface"]
    option_names = {"pnet": "threshold_pnet", "rnet": "threshold_rnet", "minface": "min_face_size"}
    for spec in args.detectors.split(","):
        detector, side, options = parse_spec(spec)
        settings = dict(o.partition("=")[::2] for o in options if "=" in o)
        F.RECHECK_MAX = int(settings.pop("looks", default_looks))
        F._DOUBT_SCORES["centerface"] = float(settings.pop("doubt", default_doubt))
        F.MTCNN_OPTIONS.update({option_names[k]: float(v) for k, v in settings.items()})
        rotations = (0.0, -30.0, 30.0) if "rot" in options else (0.0,)
        recheck = "norecheck" not in options
        run = run_detector(photos, detector, side, rotations, recheck)
        run.name = spec
        if detector == "mtcnn" and "rot" not in options:
            run.ceiling = standalone_recall(photos, images48, recheck)[0]
        runs.append(run)
        F.MTCNN_OPTIONS.clear()
        F.MTCNN_OPTIONS.update(defaults)
        F.RECHECK_MAX, F._DOUBT_SCORES["centerface"] = default_looks, default_doubt
        print(f"ran {run.name}", file=sys.stderr)

    summaries = {run.name: detection_rows(photos, run, [0.0], images48)[0] for run in runs}
    print()
    print(
        "Candidates side by side (framed: IoU >= 0.4 with the face's 48-px frame; on the face: the box's centre inside "
        "that frame, its side 0.5-2x the frame's, whatever the framing; each at core.faces' operating scores; "
        "ms per photo, wall clock, detection alone)"
    )
    print()
    print(
        "| candidate | recall (framed) | false pos. / photo | of which on background | found (on the face) | false pos. / photo "
        "(on the face) | detect median ms | detect p95 ms | detect CPU median / p95 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        r = summaries[run.name]
        print(
            f"| {run.name} | {r['recall']:.1%} | {r['fp_per_photo']:.3f} | {r['background_per_photo']:.3f} "
            f"| {r['found']:.1%} | {r['fp_off_face']:.3f} "
            f"| {np.median(run.detect_ms):.0f} | {np.percentile(run.detect_ms, 95):.0f} "
            f"| {np.median(run.detect_cpu_ms):.0f} / {np.percentile(run.detect_cpu_ms, 95):.0f} |"
        )

    print()
    print("Detection in detail (crop corr: median correlation of the aligned crop with the original 48x48 face; "
          "higher min scores keep the stronger faces of the same run)")
    print()
    print("| candidate | min score | recall | frame < 100 px | 100-200 px | >= 200 px | tilt > 15 deg | false pos. / photo | of which on background | crop corr |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        # MTCNN's scores only: a CenterFace face may carry MTCNN's keypoints and score (core.faces._mtcnn_keypoints).
        thresholds = [F.MTCNN_MIN_SCORE, 0.9, 0.95] if run.detector == "mtcnn" else [0.0]
        for r in detection_rows(photos, run, thresholds, images48):
            print(
                f"| {r['name']} | {r['threshold']:.2f} | {r['recall']:.1%} | {r['small']:.1%} | {r['medium']:.1%} "
                f"| {r['large']:.1%} | {r['tilted']:.1%} | {r['fp_per_photo']:.3f} | {r['background_per_photo']:.3f} | {r['corr']:.3f} |"
            )
    print(
        "\nFalse positives on background: detections that touch no face's frame (IoU < 0.05); the rest sit on a face "
        "but miss its frame (IoU < 0.4), mostly FER2013 faces small in their 48x48 frame."
    )
    distinct = len({t.index for p in photos for t in p.truths})
    print(
        f"Ceiling (column 'alone' below, MTCNN only): the share of the {distinct} distinct faces the same MTCNN settings find "
        "on their own (upscaled 4x, mirrored border): FER2013 faces it cannot find alone it will not find in a photo."
    )
    oracle = []
    for photo in photos:
        rgb = F.load_photo(photo.jpeg)
        for t in photo.truths:
            oracle.append(crop_correlation(F.align_face(rgb, F.Face(t.box, 1.0, t.keypoints, "truth")), images48[t.index]))
    print(
        f"Crop corr of the true-placement crop (perfect detection, FER2013's own framing): median {np.median(oracle):.3f}. "
        "Detected crops are lower because alignment puts every face at the *median* FER2013 framing, "
        "while FER2013's own framing varies from face to face (inter-ocular distance 12.7-20.5 px, 10th-90th percentile)."
    )
    print()
    print("Latency per photo, ms (detect: detection alone, wall and process CPU time; photo: decode JPEG + detect + align every face)")
    print()
    print("| candidate | detect median | detect p95 | detect CPU median | detect CPU p95 | photo median | photo p95 | alone |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run.name} | {np.median(run.detect_ms):.0f} | {np.percentile(run.detect_ms, 95):.0f} "
            f"| {np.median(run.detect_cpu_ms):.0f} | {np.percentile(run.detect_cpu_ms, 95):.0f} "
            f"| {np.median(run.total_ms):.0f} | {np.percentile(run.total_ms, 95):.0f} | {run.ceiling:.1%} |"
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other jobs on the machine inflate wall times)")

    default = next((run for run in runs if run.name == F.DEFAULT_DETECTOR), runs[-1])
    if args.examples:
        save_examples(photos, default, args.examples)

    if args.model:
        import keras

        from core.runs import Run

        model = Run(args.model).model() if args.model.is_dir() else keras.models.load_model(args.model, safe_mode=True)
        print()
        print(f"Accuracy through the photo path, {default.name}, model: {args.model} (found: by each match rule)")
        print()
        print("| candidate | match | faces | found | direct 48x48 | true-placement crop from photo | photo path (missed = wrong) | photo path, found faces | direct, same found faces |")
        print("|---|---|---|---|---|---|---|---|---|")
        for rule, acc in accuracy_rows(photos, default, model, images48).items():
            print(
                f"| {default.name} | {rule} | {acc['faces']} | {acc['found']} | {acc['direct']:.1f}% | {acc['oracle']:.1f}% "
                f"| {acc['path_all']:.1f}% | {acc['path_found']:.1f}% | {acc['direct_found']:.1f}% |"
            )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
