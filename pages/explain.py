"""Explain: which pixels of one face drive each model's decision, by several methods at once.

One row per model and one column per method, every map drawn over the same
face on the same 0..1 scale, so students can see whether methods agree and
whether a CNN and a DNN of the same size look at the same places. The face
comes from another page (``st.session_state["explain_image"]``, see
``dashboard.nav.send_to_explain``), the data set, or an uploaded photo.
Under each map: its deletion / insertion areas against random pixel orders,
and, after "Run sanity check", whether it survives randomising the model
(``core.explain.trust``). Every map and check is cached per (run, face,
method, target, score, settings), so a class looking at the same face waits
once.
"""

import numpy as np
import streamlit as st

from core.data import EMOTIONS
from core.explain import EXPLAINERS
from core.explain.trust import PASS_SPEARMAN, passes
from core.figures import sanity_curves, upscale
from dashboard import inference, nav, photo_upload, pickers, state
from dashboard.overlay import colour_bar, heat_overlay

METHODS = {key: cls.title for key, cls in EXPLAINERS.items()}
DEFAULT_METHODS = ["saliency", "smoothgrad", "gradcam", "lime"]
CASCADE_COLUMNS = 6  # maps shown per method in the sanity cascade (evenly spaced layers)
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
chosen = pickers.runs_picker(runs, key="explain_runs", one_per_kind=True)  # each model costs seconds
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

show_trust = st.toggle("Trust scores under each map", value=True, key="explain_trust",
                       help="Deletion / insertion: the model's probability of the class while the map's most important "
                       "pixels are greyed out first (deletion, lower area is better) or revealed first on a grey face "
                       "(insertion, higher is better), against random pixel orders. Gain > 0: the map knows better "
                       "than chance which pixels matter.")
sanity_asked: set = st.session_state.setdefault("explain_sanity_asked", set())

for run in chosen:
    path = str(run.path)
    probs = inference.probabilities(path, face_digest, np.asarray(image, np.uint8)[None])[0]
    predicted = int(probs.argmax())
    target = {"predicted": predicted, "true": label, "other": other}[target_kind]
    st.markdown(f"#### {pickers.run_title(run)}")
    st.markdown(f"Predicts **{EMOTIONS[predicted]}** ({probs[predicted]:.0%}); explaining **{EMOTIONS[target]}** "
                f"({probs[target]:.0%}). All: " + " · ".join(f"{name} {p:.0%}" for name, p in zip(EMOTIONS, probs)))
    supported = [m for m in methods if not inference.unsupported(path, m)]
    sanity_key = (path, face_digest, target, score)
    cascades: dict[str, list[dict]] = {}
    for cell, method in zip(st.columns(len(methods)), methods):
        with cell:
            if method not in supported:
                st.info(f"**{METHODS[method]}**: {inference.unsupported(path, method)}")
                continue
            with st.spinner(f"{METHODS[method]}…"):
                heat = inference.explanation(path, face_digest, image, method, target, score, knobs[method])
            st.image(heat_overlay(image, heat, opacity), caption=METHODS[method], output_format="PNG")
            if show_trust:
                with st.spinner("deletion and insertion…"):
                    curves = inference.faithfulness(path, face_digest, image, method, target, score, knobs[method])
                st.caption(f"gain **{curves['gain']:+.2f}** · deletion AUC {curves['deletion_auc']:.2f} "
                           f"(random {curves['random_deletion_auc']:.2f}) · insertion AUC {curves['insertion_auc']:.2f} "
                           f"(random {curves['random_insertion_auc']:.2f})")
            if sanity_key in sanity_asked:
                with st.spinner("sanity check: randomising layers…"):
                    cascades[METHODS[method]] = inference.sanity(path, face_digest, image, method, target, score, knobs[method])
                verdict = "passes" if passes(cascades[METHODS[method]]) else "**fails**"
                st.caption(f"sanity check {verdict}: Spearman {cascades[METHODS[method]][-1]['spearman']:.2f} "
                           f"with every layer random")
    if not supported:
        continue
    if sanity_key not in sanity_asked:
        if st.button("Run sanity check", key=f"explain_sanity_{run.id}",
                     help="Re-initialise the model's layers from the output down, one more at a time (on a copy), and "
                     "redraw each map: a map that keeps its structure explains the face, not the model "
                     "(Adebayo et al. 2018). Seconds per method; LIME takes longest."):
            sanity_asked.add(sanity_key)
            st.rerun()
        continue
    with st.expander(f"Sanity check: the maps as layers are randomised ({run.id})", expanded=True):
        st.plotly_chart(sanity_curves(cascades, PASS_SPEARMAN), key=f"explain_sanity_chart_{run.id}")
        for name, rows in cascades.items():
            picks = np.unique(np.linspace(0, len(rows) - 1, min(CASCADE_COLUMNS, len(rows))).round().astype(int))
            shown = [rows[i] for i in picks]  # evenly spaced, always ending with every layer random
            st.image([heat_overlay(image, row["map"], opacity) for row in shown],
                     caption=[f"{name}: random to {row['layer']}" for row in shown], width=110, output_format="PNG")
