"""Filters: what a CNN's convolution filters respond to, what they make of a face, and
what the model thinks each emotion looks like.

All three pictures come from ``core.explain.filters``: gradient ascent from
one shared noise image (all chosen filters, or all 7 emotions, in one batch),
and a layer's output for a real face. Ascent costs seconds, so the steps are a
slider with a default that finishes in a few seconds on a 2-core CPU, and
every result is cached for the whole server.
"""

import streamlit as st

from core.data import EMOTIONS
from core.explain.filters import capped_steps
from core.figures import upscale
from core.models import conv_layers
from dashboard import inference, nav, pickers, state
from dashboard.overlay import enlarge_to, stretch

TILE = 96  # px each picture is shown at (whole-factor enlargement, pixels repeated)
MAX_FILTERS = 64  # per grid: one batched ascent of 64 faces still takes seconds


st.title("Filters")
# Single CNNs only: a DNN has no filters, an ensemble has one set per member.
runs = [run for run in state.run_store().list() if pickers.kind(run) == "cnn"]
if not runs:
    nav.stop_without_runs("No finished CNN run yet (DNNs have no convolution filters): train one first.")

run = pickers.run_picker(runs, key="filters_run", label="CNN run")
path = str(run.path)
model = state.model(path)
layers = conv_layers(model)
shapes = {name: model.get_layer(name).output.shape for name in layers}  # (None, h, w, filters)
layer_col, start_col, count_col, steps_col = st.columns(4)
pickers.seed_widget("filters_layer", layers[0], valid=layers)
layer = layer_col.selectbox(
    "Convolution layer", layers, key="filters_layer",
    format_func=lambda name: f"{name} ({shapes[name][-1]} filters, {shapes[name][1]}×{shapes[name][2]})",
)
n_filters = int(shapes[layer][-1])
pickers.seed_widget("filters_start", 0)
st.session_state["filters_start"] = min(int(st.session_state["filters_start"]), n_filters - 1)  # another layer may have fewer
start = int(start_col.number_input(f"First filter (0–{n_filters - 1})", 0, n_filters - 1, step=1, key="filters_start"))
most = min(MAX_FILTERS, n_filters - start)
pickers.seed_widget("filters_count", min(16, most))
st.session_state["filters_count"] = min(int(st.session_state["filters_count"]), most)
count = int(count_col.number_input(f"How many (1–{most})", 1, most, step=1, key="filters_count"))
steps = steps_col.slider("Gradient-ascent steps", 10, 300, 40, 10, key="filters_steps",
                         help="More steps: clearer patterns; the time grows in proportion.")
if capped_steps(steps) < steps:
    st.caption(f"Steps capped at {capped_steps(steps)} by $FERLAB_VIS_STEPS on this server.")
indices = range(start, start + count)

st.subheader("What each filter responds to")
st.caption("Each picture starts from the same faint noise and is changed, step by step, to raise the filter's "
           "mean activation; contrast stretched per picture. Early layers answer edges and blobs, later ones larger parts.")
with st.spinner(f"Growing {count} pictures ({capped_steps(steps)} steps)…"):
    pictures = inference.filter_pictures(path, layer, start, count, steps)
st.image(list(enlarge_to(stretch(pictures), TILE)), caption=[f"filter {i}" for i in indices], output_format="PNG")

st.subheader("What the filters make of a face")
loaded = pickers.require_data()
index = pickers.image_picker(loaded, key="filters_face")
face = loaded.data.images[index]
face_col, maps_col = st.columns([1, 5])
face_caption = f"{pickers.emotion_name(int(loaded.data.labels[index]))} · {loaded.data.ids[index]}"
face_col.image(upscale(face, 2), caption=face_caption, output_format="PNG")
maps = inference.layer_response(path, layer, inference.digest(face), face)[start : start + count]
maps_col.image(list(enlarge_to(stretch(maps), TILE)), caption=[f"filter {i}" for i in indices], output_format="PNG")
maps_col.caption(f"The layer's output ({maps.shape[1]}×{maps.shape[2]} per filter), "
                 "each map stretched to its own range: white where the filter responds most.")

st.subheader("What the model thinks each emotion looks like")
st.caption("One picture per emotion, grown from the same noise to raise that emotion's score (the logit).")
with st.spinner(f"Growing 7 pictures ({capped_steps(steps)} steps)…"):
    classes = inference.class_pictures(path, steps)
st.image(list(enlarge_to(stretch(classes), TILE)), caption=list(EMOTIONS), output_format="PNG")
