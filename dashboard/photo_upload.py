"""A face photo in, 48x48 model inputs out: Home's headline section, also used by Explain.

The photo's bytes stay in this server's memory (the uploader's, then a cache
keyed by their SHA-256); nothing is written to disk. Decoding, detection and
alignment are ``core.faces``; this module shows what it found and lets the
user pick. A bad file (not an image, cut short, too large) gives the
``PhotoError`` message in an error box, never a traceback.

The pieces are separate functions so that Explain can reuse the photo and face
pickers, and tests can check ``read_photo`` and ``prediction_table`` without a
browser.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core.data import EMOTIONS
from core.explain.occlusion import cover_regions
from core.faces import (
    PHOTO_FORMATS,
    PhotoError,
    align_face,
    centre_crop_face,
    draw_boxes,
    faces_in_photo,
    shrink_to,
    whole_image_face,
)
from core.figures import probability_bars, upscale
from dashboard import inference, nav, pickers, state

PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
PREVIEW_SIDE = 1024  # px: the boxed photo is shrunk to this for the browser (and the cache)
PHOTO_WIDTH = 560  # px the boxed photo is shown at, at most
FACE_WIDTH = 4 * 48  # px: a 48x48 face at exactly 4x, which the browser then need not rescale (no blur)
FALLBACKS = {"whole": "the whole image", "centre": "a centred square crop"}
COVERABLE = {"eyes": "the eyes", "brows": "the brows", "nose": "the nose", "mouth": "the mouth"}


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    digest: str


@dataclass(frozen=True)
class FoundFaces:
    """What ``core.faces`` found in one photo, small enough to cache.

    boxed: the photo (at most PREVIEW_SIDE px) with every face boxed and numbered.
    crops: (N, 48, 48) uint8 model inputs, numbered as on ``boxed``, left to right.
    skipped_detection: the file was a face crop already and is its own one face.
    fallbacks: when no face was found, FALLBACKS key -> (48, 48) crop to use instead.
    note: how the file's colours were converted, when that may matter ('' if not).
    """

    boxed: np.ndarray
    crops: np.ndarray
    skipped_detection: bool
    fallbacks: dict[str, np.ndarray]
    note: str


@st.cache_data(max_entries=32, show_spinner=False)
def read_photo(photo_digest: str, _data: bytes) -> FoundFaces:
    """Decode, detect, align; raises ``PhotoError`` (not cached, so a retry reads again)."""
    photo = faces_in_photo(_data)
    rgb = photo.rgb
    fallbacks = {}
    if not photo.faces:
        fallbacks = {"whole": align_face(rgb, whole_image_face(rgb)), "centre": align_face(rgb, centre_crop_face(rgb))}
    return FoundFaces(
        boxed=shrink_to(draw_boxes(rgb, photo.faces), PREVIEW_SIDE),  # 40 MP would cost 120 MB a cache entry
        crops=photo.crops,
        skipped_detection=photo.skipped_detection,
        fallbacks=fallbacks,
        note=_conversion_note(_data),
    )


def _conversion_note(data: bytes) -> str:
    """A word on print colours or transparency, which ``core.faces`` converts silently.

    Only the header is read (the pixels were decoded already, successfully).
    """
    with Image.open(io.BytesIO(data), formats=PHOTO_FORMATS) as image:
        mode, transparent = image.mode, "transparency" in image.info
    if mode == "CMYK":
        return "This is a CMYK (print) image: its colours were converted to RGB, then to grey for the models."
    if transparent or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return ("This image has a transparency channel: any transparent parts are shown on white, "
                "which is what the face detector and the models see.")
    return ""


def prediction_table(probs: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per face ('face 1', ...), one column per model: its top emotion and probability."""
    columns = {name: [f"{EMOTIONS[int(row.argmax())]} {row.max():.0%}" for row in p] for name, p in probs.items()}
    n_faces = len(next(iter(probs.values())))
    return pd.DataFrame(columns, index=[f"face {i}" for i in range(1, n_faces + 1)])


def covering_table(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per model: its answer for the face, for the covered face, and how p(first answer) moved."""
    rows = []
    for name, p in before.items():
        top, q = int(p.argmax()), after[name]
        rows.append({"model": name, "face": f"{EMOTIONS[top]} {p[top]:.0%}",
                     "covered": f"{EMOTIONS[int(q.argmax())]} {q.max():.0%}",
                     "change in p(first answer)": f"{q[top] - p[top]:+.0%}"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ widgets


def photo_input(key: str, camera: bool = True) -> Photo | None:
    """An uploaded photo, or (with ``camera``) one taken with the webcam; None until there is one.

    The camera sits behind a choice because showing ``st.camera_input`` asks
    the browser for the webcam at once.
    """
    how = "upload"
    if camera:
        how = st.radio("Photo", ["upload", "camera"], format_func={"upload": "Upload a file", "camera": "Take a photo"}.get,
                       horizontal=True, key=f"{key}_how")
    if how == "upload":
        file = st.file_uploader(
            "A photo with one or more faces (JPEG, PNG, WebP, BMP, GIF or TIFF), or a 48×48 face",
            type=PHOTO_TYPES,
            key=f"{key}_file",
            help="Kept in this server's memory for your session; never saved to disk.",
        )
    else:
        file = st.camera_input("Look into the camera", key=f"{key}_camera")
    if file is None:
        return None
    data = file.getvalue()
    return Photo(file.name, data, inference.digest(data))


def face_crops(photo: Photo, key: str) -> np.ndarray | None:
    """The photo's faces as (N, 48, 48) model inputs, after showing where they are; None if none to use."""
    try:
        with st.spinner("Looking for faces…"):
            found = read_photo(photo.digest, photo.data)
    except PhotoError as err:
        st.error(f"{photo.name}: {err}")
        return None
    except Exception as err:  # noqa: BLE001 - a detector or decoder failing on this photo: a message, not a traceback
        logging.getLogger(__name__).exception("photo %s", photo.name)
        st.error(f"{photo.name}: this photo could not be processed ({type(err).__name__}); please try another one.")
        return None
    if found.note:
        st.warning(found.note)
    if found.skipped_detection:
        st.caption("This image already is a face crop (48×48, or small, square and grey): used as it is, without face detection.")
        return found.crops
    width = min(PHOTO_WIDTH, found.boxed.shape[1])
    if len(found.crops):
        count = f"{len(found.crops)} face{'s' if len(found.crops) > 1 else ''}"
        st.image(found.boxed, caption=f"{count} found, numbered left to right", width=width)
        return found.crops
    st.image(found.boxed, width=width)
    st.warning(f"{photo.name}: no face found in this photo. The detector (CenterFace, with MTCNN's second look) can miss very "
               "small faces, faces turned far to the side, or heavily shadowed ones; you can still classify part of the image.")
    choice = st.radio("Use instead", list(FALLBACKS), index=None, format_func=FALLBACKS.get, horizontal=True,
                      key=f"{key}_fallback")
    return None if choice is None else found.fallbacks[choice][None]


def face_picker(n_faces: int, key: str) -> int:
    """Index of one of ``n_faces`` faces, numbered as on the photo (no widget for a single face)."""
    if n_faces == 1:
        return 0
    pickers.seed_widget(f"{key}_face", 0, valid=range(n_faces))  # a new photo may have fewer faces
    return st.radio("Face", range(n_faces), format_func=lambda i: f"face {i + 1}", horizontal=True, key=f"{key}_face")


# ------------------------------------------------------------------ section


def photo_upload_section() -> None:
    """Home's headline: every face of a photo boxed, what each chosen model says, one face up close."""
    st.subheader("Try a photo of your own")
    st.caption("Each face is found, turned upright and cut out the way FER2013 frames its faces, "
               "then shrunk to the 48×48 grey image the models were trained on.")
    photo = photo_input("home_photo")
    if photo is None:
        return
    crops = face_crops(photo, "home_photo")
    if crops is None:
        return
    runs = state.run_store().list()
    if not runs:
        st.info("No trained model yet: train one to see what it predicts for these faces.")
        return
    chosen = pickers.runs_picker(runs, key="home_photo_runs")
    if not chosen:
        st.info("Choose one or more runs to see their predictions.")
        return
    # Off by default: the explanations explain the face as it is, one view, so the answers match them.
    tta = "rotate-zoom" if st.toggle(
        "Average each answer over the face, its mirror, turned ±10° and zoomed ±10% (test-time augmentation)",
        key="home_photo_tta",
        help="10 views a face, 10x the work: on FER2013 PublicTest it lifts the two shipped ferlab-wide CNNs from 0.6434 and 0.6486 to 0.6793 and 0.6838, "
             "and the ensemble chosen for it (combine --select --tta rotate-zoom) scores 0.6941. "
             "The explanations still explain the face as it is.") else "none"
    crops_digest = inference.digest(crops)
    with st.spinner("Asking the models…"):
        probs = {pickers.run_title(run): inference.probabilities(str(run.path), crops_digest, crops, tta) for run in chosen}
    st.dataframe(prediction_table(probs))

    index = face_picker(len(crops), "home_photo")
    image_col, bars_col = st.columns([1, 3])
    image_col.image(upscale(crops[index], 4), caption="What the models see: 48×48 grey, shown 4× with pixels repeated",
                    width=FACE_WIDTH, output_format="PNG")
    bars_col.plotly_chart(probability_bars({name: p[index] for name, p in probs.items()}), key="home_photo_bars")
    if st.button("Explain this face", key="home_photo_explain", type="primary"):
        nav.send_to_explain(crops[index], -1, f"your photo {photo.name}, face {index + 1}")
    covering_section(crops[index], {name: p[index] for name, p in probs.items()}, chosen, tta)


def covering_section(face: np.ndarray, before: dict[str, np.ndarray], runs: list, tta: str) -> None:
    """Cover the eyes, brows, nose or mouth of the face and watch each model's answer move."""
    st.markdown("**Cover part of the face**: which features does each model's answer rest on?")
    regions = st.pills("Cover", list(COVERABLE), selection_mode="multi", format_func=COVERABLE.get,
                       key="home_photo_cover", help="Painted the face's mean grey, in a fixed layout of the aligned "
                       "FER2013 face (core.explain.occlusion.REGIONS).")
    if not regions:
        return
    covered = np.clip(np.rint(cover_regions(face, regions)), 0, 255).astype(np.uint8)
    covered_digest = inference.digest(covered)
    after = {pickers.run_title(run): inference.probabilities(str(run.path), covered_digest, covered[None], tta)[0]
             for run in runs}
    image_col, bars_col = st.columns([1, 3])
    image_col.image(upscale(covered, 4), caption="covered: " + ", ".join(COVERABLE[r] for r in regions),
                    width=FACE_WIDTH, output_format="PNG")
    bars_col.plotly_chart(probability_bars(after), key="home_photo_cover_bars")
    st.dataframe(covering_table(before, after), hide_index=True)
