"""Explain: which pixels of one face drive each model's decision, by several methods at once.

One row per model and one column per method, every map drawn over the same
face on the same 0..1 scale, so students can see whether methods agree and
whether a CNN and a DNN of the same size look at the same places. The face
comes from another page (``st.session_state["explain_image"]``, see
``dashboard.nav.send_to_explain``), the data set, or an uploaded photo.
Every map is cached per (run, face, method, target, score, settings), so a
class looking at the same face waits once.
"""

import numpy as np
import streamlit as st

from core.data import EMOTIONS
from core.explain import EXPLAINERS
from core.figures import upscale
from dashboard import inference, nav, photo_upload, pickers, state
from dashboard.overlay import colour_bar, heat_overlay

METHODS = {key: cls.title for key, cls in EXPLAINERS.items()}
DEFAULT_METHODS = ["saliency", "smoothgrad", "gradcam", "lime"]
SOURCES = {"sent": "Face sent from another page", "data": "A face of the data set", "upload": "Upload a photo"}

st.title("Explain")
runs = state.run_store().list()
if not runs:
    nav.stop_without_runs()

# ---------------------------------------------------------------- the face
sent = st.session_state.get(nav.EXPLAIN_KEY)
sources = (["sent"] if sent is not None else []) + ["data", "upload"]
# A face sent from another page comes first: sending it left this page, which resets this choice.
pickers.seed_widget("explain_source", sources[0], valid=sources)
source = st.radio("Face", sources, format_func=SOURCES.get, horizontal=True, key="explain_source")
if source == "sent":
    image, label, where = sent["image"], sent["label"], sent["source"]
elif source == "data":
    loaded = pickers.require_data()
    index = pickers.image_picker(loaded, key="explain_face")
    image, label = loaded.data.images[index], int(loaded.data.labels[index])
    where = f"{state.current_source().label} · {loaded.data.ids[index]}"
else:
    photo = photo_upload.photo_input("explain_photo", camera=False)
    crops = None if photo is None else photo_upload.face_crops(photo, "explain_photo")
    if crops is None:
        st.stop()
    face_number = photo_upload.face_picker(len(crops), "explain_photo")
    image, label, where = crops[face_number], -1, f"your photo {photo.name}, face {face_number + 1}"
face_digest = inference.digest(np.asarray(image, np.uint8))

# --------------------------------------------------------------- settings
chosen = pickers.runs_picker(runs, key="explain_runs")
pickers.seed_widget("explain_methods", DEFAULT_METHODS)
methods = st.multiselect("Methods", list(METHODS), format_func=METHODS.get, key="explain_methods")
targets = {
    "predicted": "each model's prediction",
    "true": f"the true emotion ({pickers.emotion_name(label)})",
    "other": "another emotion",
}
target_kinds = [kind for kind in targets if kind != "true" or label >= 0]
pickers.seed_widget("explain_target", target_kinds[0], valid=target_kinds)
target_col, score_col, opacity_col = st.columns(3)
target_kind = target_col.radio("Explain the score of", target_kinds, format_func=targets.get, key="explain_target")
other = None
if target_kind == "other":
    other = target_col.selectbox("Emotion", range(len(EMOTIONS)), format_func=EMOTIONS.__getitem__, key="explain_other")
score = score_col.radio(
    "Score", ["logit", "softmax"], horizontal=True, key="explain_score",
    help="logit: the class's own pre-softmax score. softmax: its probability, whose gradient also rewards "
    "pixels that lower the other classes and fades once the model is sure (maps of confident faces look empty).",
)
opacity = opacity_col.slider("Heat-map opacity", 0.0, 1.0, 0.7, 0.05, key="explain_opacity")
knobs: dict[str, dict[str, float]] = {method: {} for method in METHODS}
if "smoothgrad" in methods or "lime" in methods:
    sg_col, noise_col, lime_col = st.columns(3)
    if "smoothgrad" in methods:
        knobs["smoothgrad"] = {
            "n_samples": sg_col.slider("SmoothGrad: noisy copies", 5, 100, 20, 5, key="explain_sg_samples"),
            "noise": noise_col.slider("SmoothGrad: noise (share of 0–255)", 0.0, 0.5, 0.15, 0.05, key="explain_sg_noise"),
        }
    if "lime" in methods:
        lime_samples = lime_col.slider("LIME: perturbed samples", 100, 3000, 500, 100, key="explain_lime_samples",
                                       help="More samples: a steadier map, and proportionally longer to compute.")
        knobs["lime"] = {"n_samples": lime_samples}

# ------------------------------------------------------------------ grid
face_col, legend_col = st.columns([1, 3])
face_col.image(upscale(image, 4), caption=f"{pickers.emotion_name(label)} · {where}", width=photo_upload.FACE_WIDTH,
              output_format="PNG")
legend_col.image(colour_bar(), caption="0: no evidence → 1: the strongest evidence in that map (each map scaled to its own maximum)",
                 output_format="PNG")
legend_col.markdown("\n".join(f"- **{METHODS[m]}**: {EXPLAINERS[m].description.removeprefix(METHODS[m] + ': ')}" for m in methods))
if not chosen or not methods:
    st.info("Choose at least one run and one method.")
    st.stop()

for run in chosen:
    path = str(run.path)
    probs = inference.probabilities(path, face_digest, np.asarray(image, np.uint8)[None])[0]
    predicted = int(probs.argmax())
    target = {"predicted": predicted, "true": label, "other": other}[target_kind]
    st.markdown(f"#### {pickers.run_title(run)}")
    st.markdown(f"Predicts **{EMOTIONS[predicted]}** ({probs[predicted]:.0%}); explaining **{EMOTIONS[target]}** "
                f"({probs[target]:.0%}). All: " + " · ".join(f"{name} {p:.0%}" for name, p in zip(EMOTIONS, probs)))
    for cell, method in zip(st.columns(len(methods)), methods):
        with cell:
            note = inference.unsupported(path, method)
            if note:
                st.info(f"**{METHODS[method]}**: {note}")
                continue
            with st.spinner(f"{METHODS[method]}…"):
                heat = inference.explanation(path, face_digest, image, method, target, score, knobs[method])
            st.image(heat_overlay(image, heat, opacity), caption=METHODS[method], output_format="PNG")
