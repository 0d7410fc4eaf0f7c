"""core.faces: decoding user photos, finding faces, aligning them like FER2013.

No FER2013 here: the real face is scikit-image's bundled astronaut photo
(Eileen Collins, 512x512), pasted onto generated backgrounds.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from core import centerface
from core import faces as F


# ---------------------------------------------------------------------------
# Test images
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def astro_face(astronaut) -> F.Face:
    faces = F.detect_faces(astronaut, detector="mtcnn")  # the reference: the keypoints FER_TEMPLATE was measured with
    assert len(faces) == 1, faces
    return faces[0]


def background(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colour gradient with mild noise and a few flat shapes: no face in it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, b, base = rng.uniform(-0.15, 0.15, 2).tolist() + [rng.uniform(60, 190)]
        out[..., c] = base + a * xx + b * yy
    out += rng.normal(0, 6, out.shape)
    for _ in range(4):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        cv2.rectangle(out, (x, y), (x + int(rng.integers(20, 80)), y + int(rng.integers(20, 80))), colour, -1)
    return np.clip(out, 0, 255).astype(np.uint8)


def head_patch(astronaut: np.ndarray, face: F.Face) -> np.ndarray:
    """The astronaut's head and some shoulders/background around it (a square, ~2.3x the face box)."""
    x, y, w, h = face.box
    cx, cy = x + w / 2, y + h / 2
    side = int(2.3 * max(w, h))
    x0, y0 = int(cx - side / 2), int(cy - side / 2)
    return astronaut[max(0, y0) : y0 + side, max(0, x0) : x0 + side].copy()


def paste_feathered(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend a patch with soft (feathered) edges, as a real photo has no hard seams."""
    h, w = patch.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    border = max(2, min(h, w) // 10)
    alpha[border:-border, border:-border] = 1
    alpha = cv2.GaussianBlur(alpha, (0, 0), border / 2)[..., None]
    region = canvas[y : y + h, x : x + w].astype(np.float32)
    canvas[y : y + h, x : x + w] = (alpha * patch + (1 - alpha) * region).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kwargs)
    return buf.getvalue()


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def redetected_eye_angle(crop: np.ndarray) -> float:
    """Eye angle of an aligned 48x48 crop, measured by running MTCNN on it upscaled with context."""
    big = cv2.resize(crop, (192, 192), interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, 48, 48, 48, 48, cv2.BORDER_REPLICATE)
    faces = F.detect_faces(np.repeat(big[..., None], 3, axis=2), detector="mtcnn")  # one instrument for every test
    assert len(faces) == 1, "the aligned crop no longer looks like one face"
    return faces[0].eye_angle()


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("detector", ["centerface", "mtcnn", "mtcnn+centerface"])
def test_three_faces_in_a_composite_photo(astronaut, astro_face, detector):
    canvas = background(520, 1000, seed=3)
    patch = head_patch(astronaut, astro_face)
    expected = []
    for x, y, scale in ((40, 120, 0.55), (330, 60, 0.9), (700, 160, 0.7)):
        p = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        paste_feathered(canvas, p, x, y)
        # Where the face box lands: its offset inside the patch (cut off at the photo's edge, as head_patch does), scaled.
        px0 = astro_face.box[0] - max(0, int(astro_face.box[0] + astro_face.box[2] / 2 - int(2.3 * max(astro_face.box[2:])) / 2))
        py0 = astro_face.box[1] - max(0, int(astro_face.box[1] + astro_face.box[3] / 2 - int(2.3 * max(astro_face.box[2:])) / 2))
        expected.append((x + px0 * scale, y + py0 * scale, astro_face.box[2] * scale, astro_face.box[3] * scale))

    found = F.faces_in_photo(encode(canvas, "JPEG", quality=90), detector=detector)
    assert not found.skipped_detection
    assert len(found.faces) == 3, found.faces
    assert found.crops.shape == (3, 48, 48) and found.crops.dtype == np.uint8
    xs = [f.box[0] for f in found.faces]
    assert xs == sorted(xs), "faces must come left to right"
    for face, box in zip(found.faces, expected):
        assert F.box_iou(face.box, box) > 0.5, (face.box, box)
        assert face.keypoints is not None and set(face.keypoints) == set(F.KEYPOINTS)


@pytest.mark.parametrize("detector", ["mtcnn", "centerface"])
def test_keypoints_come_in_order(astronaut, detector):
    # The image's left eye left of its right eye, eyes above the nose above the
    # mouth; mirrored, the same names still go left to right (they name image sides).
    for photo in (astronaut, np.ascontiguousarray(astronaut[:, ::-1])):
        faces = F.detect_faces(photo, detector=detector, recheck=False)  # the detector's own keypoints
        assert len(faces) == 1 and faces[0].detector == detector
        k = faces[0].keypoints
        assert k["left_eye"][0] < k["nose"][0] < k["right_eye"][0]
        assert k["mouth_left"][0] < k["mouth_right"][0]
        assert max(k["left_eye"][1], k["right_eye"][1]) < k["nose"][1] < min(k["mouth_left"][1], k["mouth_right"][1])


def test_detectors_agree_on_the_face(astronaut):
    mtcnn, cf = F.detect_faces(astronaut, detector="mtcnn"), F.detect_faces(astronaut, detector="centerface")
    assert len(mtcnn) == len(cf) == 1
    # Each framed through its own keypoint template: the same face. (Not the same crop: on this
    # smiling face CenterFace puts the mouth corners lower than MTCNN, so its crop is ~15% larger.)
    assert F.box_iou(mtcnn[0].box, cf[0].box) > 0.7
    union = F.detect_faces(astronaut, detector="mtcnn+centerface")
    assert len(union) == 1 and union[0].detector == "mtcnn"  # a face both find comes from the first
    with pytest.raises(ValueError):
        F.detect_faces(astronaut, detector="mtcnn+centerface", min_score=0.5)


def test_centerface_runs_one_net_per_canvas_shape(astronaut):
    # OpenCV 4.14's DNN gives wrong outputs when one Net sees a second input
    # shape: photos of another shape must not disturb the next detection.
    first = centerface.detect(astronaut, 0.2)
    centerface.detect(np.ascontiguousarray(astronaut[:384]), 0.2)  # 512x384: another canvas
    centerface.detect(np.ascontiguousarray(astronaut[:, :288]), 0.2)  # portrait
    again = centerface.detect(astronaut, 0.2)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert {(800, 800), (800, 608), (480, 800)} <= set(centerface._NETS)
    assert centerface.canvas_for(4032, 2268, 1024) == (1024, 576) and centerface.canvas_for(480, 640, 1024) == (768, 1024)


@pytest.mark.parametrize("detector", ["mtcnn", "centerface"])
def test_reported_box_is_the_square_the_crop_covers(detector):
    # A face whose keypoints sit where the detector's template puts them, scaled
    # by 3 and shifted: its crop covers exactly the 144-px square at the shift.
    template = F.TEMPLATES[detector]
    face = F.Face((0, 0, 1, 1), 1.0, {k: (100 + 3 * x, 50 + 3 * y) for k, (x, y) in template.items()}, detector)
    assert np.allclose(F.crop_box(face), (100, 50, 144, 144), atol=1e-6)
    # Turned about the square's centre: same centre and side (the crop turns, the reported box stays upright).
    m = cv2.getRotationMatrix2D((172.0, 122.0), 20, 1.0)
    turned = F.Face((0, 0, 1, 1), 1.0, {k: tuple(m @ np.array([*p, 1.0])) for k, p in face.keypoints.items()}, detector)
    assert np.allclose(F.crop_box(turned), (100, 50, 144, 144), atol=1e-6)


def test_photo_without_a_face_gives_no_faces():
    for seed in (0, 1):
        for detector in ("mtcnn", "centerface"):  # Haar fires on texture (bench: 0.5 false positives a photo)
            assert F.detect_faces(background(480, 640, seed), detector=detector) == [], detector
    assert F.faces_in_photo(encode(background(300, 500, 7))).faces == []


def test_haar_detector_finds_the_face_without_keypoints(astronaut, astro_face):
    faces = F.detect_faces(astronaut, detector="haar")
    assert len(faces) == 1 and faces[0].keypoints is None and faces[0].detector == "haar"
    assert F.box_iou(faces[0].box, astro_face.box) > 0.5
    # The box-based crop frames the same face as the keypoint one, roughly.
    assert corr(F.align_face(astronaut, faces[0]), F.align_face(astronaut, astro_face)) > 0.6
    with pytest.raises(ValueError):
        F.detect_faces(astronaut, detector="nope")


def test_large_photos_are_shrunk_for_detection_and_boxes_mapped_back(astronaut, astro_face):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    faces = F.detect_faces(big)  # detected at centerface.LONG_SIDE (800), reported at 2048
    assert len(faces) == 1
    scaled = tuple(v * 4 for v in astro_face.box)
    assert F.box_iou(faces[0].box, scaled) > 0.8, (faces[0].box, scaled)
    assert corr(F.align_face(big, faces[0]), F.align_face(astronaut, astro_face)) > 0.95


def test_detection_is_thread_safe(astronaut, astro_face):
    results, errors = [], []

    def work():
        try:
            results.append(F.detect_faces(astronaut))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]  # the default detector: MTCNN and CenterFace
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    alone = F.detect_faces(astronaut)  # the same call with no other thread about
    assert len(alone) == 1 and F.box_iou(alone[0].box, astro_face.box) > 0.9
    assert len(results) == 4 and all(len(r) == 1 and F.box_iou(r[0].box, alone[0].box) > 0.99 for r in results)
    assert F._mtcnn() is F._mtcnn()


# ---------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------


def test_rotated_face_comes_out_with_eyes_level(astronaut, astro_face):
    (lx, ly), (rx, ry) = astro_face.keypoints["left_eye"], astro_face.keypoints["right_eye"]
    centre = ((lx + rx) / 2, (ly + ry) / 2)
    rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D(centre, 20, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT)
    faces = F.detect_faces(rotated)
    assert len(faces) == 1
    assert abs(faces[0].eye_angle()) > 12, "the test photo must start tilted"
    crop = F.align_face(rotated, faces[0])
    assert abs(redetected_eye_angle(crop)) < 5
    # And without the rotation step it would not be level: the check can fail.
    unrotated = F.align_face(rotated, F.Face(faces[0].box, detector="given"))
    assert abs(redetected_eye_angle(unrotated)) > 10


def test_search_in_turned_photos_maps_faces_back(astronaut, astro_face):
    (lx, ly), (rx, ry) = astro_face.keypoints["left_eye"], astro_face.keypoints["right_eye"]
    centre = ((lx + rx) / 2, (ly + ry) / 2)
    rotated = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D(centre, 30, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT)
    # MTCNN, no second look: the reflected border holds a mirrored part of the face, which a second look finds.
    upright = F.detect_faces(rotated, detector="mtcnn", recheck=False)
    turned = F.detect_faces(rotated, detector="mtcnn", rotations=(-30.0,), recheck=False)  # the turned photo shows the face upright
    assert len(upright) == len(turned) == 1
    assert turned[0].angle == -30.0
    for name in F.KEYPOINTS:
        assert np.hypot(*np.subtract(turned[0].keypoints[name], upright[0].keypoints[name])) < 6, name
    assert abs(redetected_eye_angle(F.align_face(rotated, turned[0]))) < 5
    # Haar has no keypoints: its box is upright in the turned photo, and alignment turns it back.
    haar = [f for f in F.detect_faces(rotated, detector="haar", rotations=(-30.0,)) if f.angle == -30.0]
    haar = [f for f in haar if np.hypot(f.box[0] + f.box[2] / 2 - centre[0], f.box[1] + f.box[3] / 2 - centre[1]) < 40]
    assert len(haar) == 1
    assert abs(redetected_eye_angle(F.align_face(rotated, haar[0]))) < 6


def test_second_look_finds_a_small_strongly_tilted_face(astronaut, astro_face):
    # The astronaut at 0.3x (face box ~30 px) turned 60 degrees: past what the
    # upright pass accepts, but ONet doubts the box, and a closer, turned look finds it.
    (lx, ly), (rx, ry) = astro_face.keypoints["left_eye"], astro_face.keypoints["right_eye"]
    centre = ((lx + rx) / 2, (ly + ry) / 2)
    m = cv2.getRotationMatrix2D(centre, 60, 0.3)
    m[:, 2] += (320 - centre[0], 240 - centre[1])
    photo = cv2.warpAffine(astronaut, m, (640, 480), borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 120, 150))
    assert F.detect_faces(photo, detector="mtcnn", recheck=False) == []  # the check below can fail
    faces = F.detect_faces(photo, detector="mtcnn")
    assert len(faces) == 1 and faces[0].angle in F.RECHECK_ANGLES and faces[0].angle != 0
    assert faces[0].score >= F.MTCNN_MIN_SCORE
    for name in F.KEYPOINTS:
        expected = m @ np.array([*astro_face.keypoints[name], 1.0])
        assert np.hypot(*np.subtract(faces[0].keypoints[name], expected)) < 3, name  # eye distance is ~13 px
    assert abs(faces[0].eye_angle() + 60) < 10


def test_turned_view_maps_back_to_photo_pixels():
    # A bright dot, seen in views shrunk (big box) and enlarged (small box), turned.
    photo = np.zeros((600, 800, 3), np.uint8)
    cv2.circle(photo, (430, 310), 3, (255, 255, 255), -1)
    for box, angle in (((250.0, 150.0, 300.0, 300.0), 35.0), ((380.0, 280.0, 40.0, 40.0), -20.0)):
        view, back = F._turned_view(photo, box, angle)
        assert view.shape == (F.RECHECK_SIZE, F.RECHECK_SIZE, 3)
        grey = cv2.GaussianBlur(view[..., 0].astype(np.float32), (0, 0), 2)
        v, u = np.unravel_index(np.argmax(grey), grey.shape)
        x, y = back @ np.array([u + 0.5, v + 0.5, 1.0])  # pixel centre in edge coordinates
        pixel = np.sqrt(abs(np.linalg.det(back[:, :2])))  # photo pixels per view pixel
        assert np.hypot(x - 430.5, y - 310.5) < max(1.5, 1.5 * pixel), (box, x, y)


def test_aligned_crop_of_an_upscaled_48px_face_matches_it(astronaut, astro_face):
    face48 = F.align_face(astronaut, astro_face)  # a FER2013-framed face
    for factor in (3, 5):
        big = cv2.resize(face48, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        # Context around it, as a photo has: replicated border, then a background.
        big = cv2.copyMakeBorder(big, 16 * factor, 16 * factor, 16 * factor, 16 * factor, cv2.BORDER_REPLICATE)
        canvas = background(big.shape[0] + 100, big.shape[1] + 200, seed=factor)
        paste_feathered(canvas, np.repeat(big[..., None], 3, axis=2), 100, 50)
        faces = F.detect_faces(canvas)
        assert len(faces) == 1
        again = F.align_face(canvas, faces[0])
        assert again.shape == (48, 48) and again.dtype == np.uint8
        assert corr(again, face48) > 0.95  # measured 0.98-0.99; a template 10% off in scale gives 0.85


def test_template_is_the_measured_fer_framing():
    t = F.FER_TEMPLATE
    assert t["left_eye"][1] == t["right_eye"][1]  # level
    assert abs(t["right_eye"][0] - t["left_eye"][0] - F.FER_EYE_DISTANCE) < 0.01
    # Symmetric about the eyes' midpoint.
    mid = (t["left_eye"][0] + t["right_eye"][0]) / 2
    assert abs(t["nose"][0] - mid) < 0.01
    assert abs((t["mouth_left"][0] + t["mouth_right"][0]) / 2 - mid) < 0.01


def test_box_fallbacks(astronaut):
    rect = astronaut[:, :300]
    whole = F.whole_image_face(rect)
    assert whole.box == (0.0, 0.0, 300.0, 512.0) and whole.keypoints is None
    centre = F.centre_crop_face(rect)
    assert centre.box == (0.0, 106.0, 300.0, 300.0)
    crop = F.align_face(rect, centre)
    expected = cv2.resize(cv2.cvtColor(rect[106:406], cv2.COLOR_RGB2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - expected).mean() < 3
    assert F.align_face(rect, whole).shape == (48, 48)


def test_face_crops_skip_detection():
    rng = np.random.default_rng(0)
    face48 = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    found = F.faces_in_photo(encode(face48))
    assert found.skipped_detection and len(found.faces) == 1
    assert np.array_equal(found.crops[0], face48)
    assert F.is_face_crop(np.repeat(rng.integers(0, 256, (80, 80, 1), dtype=np.uint8), 3, axis=2))
    assert not F.is_face_crop(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))  # colour, not 48
    assert not F.is_face_crop(np.zeros((200, 200, 3), np.uint8))
    assert not F.is_face_crop(np.zeros((48, 60, 3), np.uint8))


def test_draw_boxes_numbers_faces_and_leaves_the_photo_alone(astronaut, astro_face):
    before = astronaut.copy()
    drawn = F.draw_boxes(astronaut, [astro_face, F.Face((10, 10, 50, 50), detector="given")])
    assert np.array_equal(astronaut, before)
    assert drawn.shape == astronaut.shape and drawn.dtype == np.uint8
    for face in (astro_face, F.Face((10, 10, 50, 50), detector="given")):
        x, y = np.round(F.crop_outline(face)[[0, 3]].mean(axis=0)).astype(int)  # the middle of the left edge
        assert (drawn[y, x] != astronaut[y, x]).any()


def test_the_outline_drawn_is_the_crop_turned_with_the_head():
    """Keypoints of the FER2013 template, 4x larger and turned 30 degrees: the crop, and its outline, turn with them."""
    turn = np.radians(30.0)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    keypoints = {k: tuple(rotation @ (4 * np.array(p)) + (300, 100)) for k, p in F.FER_TEMPLATE.items()}
    corners = F.crop_outline(F.Face((0, 0, 1, 1), keypoints=keypoints, detector="mtcnn"))
    expected = (4 * np.array([[0, 0], [48, 0], [48, 48], [0, 48]])) @ rotation.T + (300, 100)
    np.testing.assert_allclose(corners, expected, atol=1e-6)


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def test_exif_rotated_jpeg_gives_the_same_faces_as_the_upright_photo(astronaut):
    upright = np.ascontiguousarray(astronaut[:, :448])  # 512x448: not square, so a missed rotation shows
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # as a phone held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    rotated_jpeg = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    upright_jpeg = encode(upright, "JPEG", quality=95)

    a, b = F.faces_in_photo(upright_jpeg), F.faces_in_photo(rotated_jpeg)
    assert b.rgb.shape == a.rgb.shape == upright.shape
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 3
    assert len(a.faces) == len(b.faces) == 1
    assert F.box_iou(a.faces[0].box, b.faces[0].box) > 0.9
    assert corr(a.crops[0], b.crops[0]) > 0.97


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the data is one tiny row): a decompression bomb stand-in."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"this is a text file, not a photo" * 10, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
    ],
)
def test_unreadable_files_raise_photo_error(data, words):
    with pytest.raises(F.PhotoError, match=words):
        F.load_photo(data)


def test_only_photo_formats_are_opened():
    """Pillow tells formats by content: an EPS named .jpg would go to Ghostscript through a temporary file."""
    from PIL import EpsImagePlugin  # noqa: F401 - registers EPS, as any Pillow install has it

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 48 48\n%%EndComments\nshowpage\n"
    assert Image.open(io.BytesIO(eps)).format == "EPS"  # what an unrestricted open would do
    with pytest.raises(F.PhotoError, match="not an image"):
        F.load_photo(eps)


def test_large_photos_are_kept_at_decode_side(astronaut):
    """A 5000-pixel-wide JPEG is decoded at half scale, then shrunk to DECODE_SIDE; detection sees 800 anyway."""
    wide = np.asarray(Image.fromarray(astronaut).resize((5000, 1000)))
    for data in (encode(wide, "JPEG", quality=90), encode(wide)):
        assert F.load_photo(data).shape == (410, F.DECODE_SIDE, 3)
    assert F.load_photo(encode(astronaut)).shape == astronaut.shape  # smaller photos as they are


def test_shrink_to_keeps_aspect_and_averages():
    """Long side capped, short side rounded to keep the aspect; a 2x2 checker averages to its mean grey."""
    checker = np.indices((600, 300)).sum(axis=0) % 2 * 255
    rgb = np.repeat(checker[..., None], 3, axis=2).astype(np.uint8)
    small = F.shrink_to(rgb, 150)
    assert small.shape == (150, 75, 3)
    assert np.abs(small.astype(float) - 127.5).max() <= 1  # averaged, not sampled (sampling gives 0 or 255)
    assert F.shrink_to(rgb, 600) is rgb  # already within the side: the same array, no copy


def test_truncated_files_raise_photo_error(astronaut):
    png = encode(astronaut)
    with pytest.raises(F.PhotoError, match="truncated"):
        F.load_photo(png[: len(png) // 2])
    jpeg = encode(astronaut, "JPEG", quality=90)
    with pytest.raises(F.PhotoError, match="truncated"):
        F.load_photo(jpeg[: len(jpeg) // 2])
    assert issubclass(F.PhotoError, ValueError)


def test_huge_images_are_refused_before_decoding(monkeypatch):
    bomb = _png_with_size(10000, 10000)
    assert len(bomb) < 2000
    start = time.perf_counter()
    with pytest.raises(F.PhotoError, match="too large"):
        F.load_photo(bomb)
    assert time.perf_counter() - start < 0.5
    with pytest.raises(F.PhotoError, match="too large"):
        F.load_photo(_png_with_size(30000, 30000))  # past PIL's own bomb limit too
    # The limit is on the pixel count: at it an image decodes, one row more is refused.
    monkeypatch.setattr(F, "MAX_PIXELS", 300 * 200)
    assert F.load_photo(_png_with_size(300, 200)).shape == (200, 300, 3)
    with pytest.raises(F.PhotoError, match="too large"):
        F.load_photo(_png_with_size(300, 201))


def test_cmyk_jpeg_decodes_to_rgb(astronaut):
    cmyk = Image.fromarray(astronaut).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=95)
    rgb = F.load_photo(buf.getvalue())
    assert rgb.shape == astronaut.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - astronaut.astype(int)).mean() < 6


def test_transparent_png_is_composited_on_white():
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., :3] = (200, 30, 40)
    rgba[:, :30, 3] = 255  # left half opaque red, right half fully transparent
    rgba[:, 30:, :3] = 0  # transparent pixels' colour must not show
    rgb = F.load_photo(encode(rgba))
    assert rgb.shape == (40, 60, 3)
    assert (rgb[:, :30] == (200, 30, 40)).all()
    assert (rgb[:, 30:] == 255).all()


def test_palette_grey_and_16_bit_images_become_rgb():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pal = Image.fromarray(rgb).quantize(16)
    out = F.load_photo(encode(np.asarray(pal.convert("RGB"))))  # reference
    assert np.array_equal(F.load_photo(_save(pal)), out)
    grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    assert np.array_equal(F.load_photo(encode(grey)), np.repeat(grey[..., None], 3, axis=2))
    grey16 = (grey.astype(np.uint16) * 257)
    out16 = F.load_photo(_save(Image.fromarray(grey16)))
    assert out16.shape == (20, 30, 3) and np.abs(out16[..., 0].astype(int) - grey).max() <= 1


def _save(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def test_bench_match_rules_tell_found_from_framed() -> None:
    """The photo bench's two rules: a box on the face but framed tighter than FER2013 framed it is found, not framed."""
    from bench.photo_path import Truth, match

    truth = Truth((100.0, 100.0, 200.0, 200.0), 3, 0, {}, 0.0)
    same = F.Face((100.0, 100.0, 200.0, 200.0), 0.9)
    tight = F.Face((145.0, 145.0, 110.0, 110.0), 0.9)  # centred, 0.55x the side: IoU 0.30
    beside = F.Face((320.0, 100.0, 200.0, 200.0), 0.9)  # centre outside the frame
    huge = F.Face((-100.0, -100.0, 600.0, 600.0), 0.9)  # 3x the side
    assert match([truth], [same]) == {0: 0} and match([truth], [same], rule="on_face") == {0: 0}
    assert match([truth], [tight]) == {} and match([truth], [tight], rule="on_face") == {0: 0}
    for face in (beside, huge):
        assert match([truth], [face]) == {} and match([truth], [face], rule="on_face") == {}
