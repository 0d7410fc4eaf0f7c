"""Data: choose the faces every page uses, and look at them before training on them."""

import pandas as pd
import streamlit as st

from core.data import EMOTIONS, UNLABELLED
from core.figures import class_distribution, sample_grid, upscale
from dashboard import nav, pickers, state

st.title("Data")
pickers.data_source_picker("data_source")
loaded = pickers.require_data()
data = loaded.data
st.success(f"Using **{state.current_source().label}**: {len(data):,} faces, splits {', '.join(data.split_names())} "
           f"(fingerprint `{loaded.fingerprint}`).")

st.subheader("Faces per split")
counts = pd.crosstab(pd.Series(data.splits, name="split"), pd.Series(data.labels, name="label"))
counts = counts.reindex(columns=[*range(len(EMOTIONS)), UNLABELLED], fill_value=0)
counts.columns = [*EMOTIONS, "unlabelled"]
counts["total"] = counts.sum(axis=1)
st.dataframe(counts.loc[:, (counts != 0).any()])

st.subheader("Class distribution")
st.plotly_chart(class_distribution(data.labels, data.splits), key="data_distribution")

st.subheader("Samples per emotion")
split_col, shuffle_col = st.columns([3, 1])
split = split_col.selectbox("Split", ["all splits", *data.split_names()], key="data_sample_split")
if shuffle_col.button("Other faces", key="data_shuffle"):
    st.session_state["data_sample_seed"] = st.session_state.get("data_sample_seed", 0) + 1
faces = data if split == "all splits" else data.split(split)
if faces.labelled.any():
    st.plotly_chart(
        sample_grid(faces.images, faces.labels, per_class=10, seed=st.session_state.get("data_sample_seed", 0)),
        key="data_samples",
    )
else:
    st.info(f"The {split} faces have no labels, so they cannot be grouped by emotion.")

st.subheader("One face")
index = pickers.image_picker(loaded, key="data_face")
image_col, info_col = st.columns([1, 3])
image_col.image(upscale(data.images[index], 4))
label = int(data.labels[index])
info_col.markdown(f"**{pickers.emotion_name(label)}** · split {data.splits[index]} · id `{data.ids[index]}`")
if info_col.button("Explain this face", key="data_explain"):
    nav.send_to_explain(data.images[index], label, f"{data.source} {data.ids[index]}")
