"""Confusion: which emotions a model mixes up, and the faces behind each number.

Click a cell of the heat map (or pick it in the list below it) to see those
faces, most confident mistakes first; each can go to the Explain page. Faces
are found by the ids stored with the run's predictions, so they are shown
only when the loaded data set is the one the run was evaluated on.
"""

from pathlib import Path

import numpy as np
import streamlit as st

from core.data import EMOTIONS
from core.evaluation import ENSEMBLE_RULES
from core.figures import confusion_heatmap, per_class_bars, top_confusions, upscale
from dashboard import nav, pickers, state

GALLERY_SIZE = 24
GALLERY_COLUMNS = 8
SPLITS = {"val": "validation", "test": "test (PublicTest)"}

st.title("Confusion")
runs = state.run_store().list()
if not runs:
    nav.stop_without_runs()

run = pickers.run_picker(runs, key="confusion_run")
preds = state.predictions(str(run.path))
split_col, rule_col, norm_col = st.columns(3)
splits = [s for s in SPLITS if f"{s}_y" in preds]
pickers.seed_widget("confusion_split", splits[-1], valid=splits)
split = split_col.radio("Split", splits, format_func=SPLITS.get, horizontal=True, key="confusion_split")
rule = rule_col.radio("Ensemble rule", ENSEMBLE_RULES, horizontal=True, key="confusion_rule") if run.is_ensemble else None
normalized = norm_col.toggle("Row-normalised", key="confusion_normalized", help="Each true emotion's row as shares of its faces (recall on the diagonal), so rare classes read on the same scale.")

report = run.metrics["rules"][rule][split] if rule else run.metrics[split]
probs = preds[f"{split}_probs_{rule}"] if rule else preds[f"{split}_probs"]
y_true, y_pred, ids = preds[f"{split}_y"], probs.argmax(axis=1), preds[f"{split}_ids"]
confusion = np.array(report["confusion"])

acc_col, f1_col, n_col = st.columns(3)
acc_col.metric("Accuracy", f"{report['accuracy']:.1%}")
f1_col.metric("Macro F1", f"{report['macro_f1']:.3f}")
n_col.metric("Faces", f"{report['n']:,}")

heat_col, words_col = st.columns([3, 2])
with heat_col:
    event = st.plotly_chart(
        confusion_heatmap(confusion, normalized), on_select="rerun", selection_mode="points", key="confusion_heatmap"
    )
with words_col:
    st.subheader("Most confused")
    totals = confusion.sum(axis=1)
    for rank, (t, p, n) in enumerate(top_confusions(confusion), start=1):
        st.markdown(f"{rank}. **{EMOTIONS[t]}** taken for **{EMOTIONS[p]}**: {n} faces ({n / totals[t]:.0%} of {EMOTIONS[t]})")
    if not top_confusions(confusion):
        st.markdown("No mistakes on this split.")

st.subheader("Precision, recall and F1 per emotion")
st.plotly_chart(per_class_bars(report["per_class"]), key="confusion_per_class")

# ------------------------------------------------------------------ gallery
st.subheader("Faces in a cell")
cells = {f"{EMOTIONS[t]} → {EMOTIONS[p]}": (t, p) for t, p, _ in top_confusions(confusion, k=confusion.size)}
cells |= {f"{name} → {name}": (i, i) for i, name in enumerate(EMOTIONS) if confusion[i, i] > 0}
points = event.selection.points if event else []
if points:  # a click on the heat map picks the cell in the list below, once per new click
    clicked = f"{points[0]['y']} → {points[0]['x']}"
    if clicked != st.session_state.get("confusion_clicked") and clicked in cells:
        st.session_state["confusion_clicked"] = clicked
        st.session_state["confusion_cell"] = clicked
pickers.seed_widget("confusion_cell", next(iter(cells)), valid=cells)
cell = st.selectbox(
    "Cell (true → predicted); or click one on the heat map",
    list(cells),
    format_func=lambda name: f"{name} ({confusion[cells[name]]} faces)",
    key="confusion_cell",
)
true_label, predicted = cells[cell]
rows = np.flatnonzero((y_true == true_label) & (y_pred == predicted))
rows = rows[np.argsort(-probs[rows, predicted], kind="stable")]  # most confident first
st.caption(f"{len(rows)} faces, true {EMOTIONS[true_label]}, predicted {EMOTIONS[predicted]}; "
           f"showing {min(len(rows), GALLERY_SIZE)}, most confident first.")

loaded = pickers.require_data()
trained_on = run.metrics["data"]
if trained_on["fingerprint"] != loaded.fingerprint:
    st.info(f"These faces are in the data set this run was evaluated on ({trained_on['source']}), "
            f"not in the one loaded now ({state.current_source().label}). Load it to see them.")
    if trained_on["source"] == "demo" or Path(trained_on["source"]).exists():
        if st.button(f"Load {trained_on['source']}", key="confusion_load_data"):
            state.use_source(state.DEMO if trained_on["source"] == "demo" else state.path_source(trained_on["source"]))
            st.rerun()
    st.stop()

where = {face_id: i for i, face_id in enumerate(loaded.data.ids)}
columns = st.columns(GALLERY_COLUMNS)
for position, row in enumerate(rows[:GALLERY_SIZE]):
    index = where.get(str(ids[row]))
    with columns[position % GALLERY_COLUMNS]:
        if index is None:
            st.caption(f"`{ids[row]}` not in the loaded data")
            continue
        image = loaded.data.images[index]
        score = "votes" if rule == "vote" else "p"  # a vote share is not a probability
        st.image(upscale(image, 2), caption=f"{score}={probs[row, predicted]:.0%}")
        if st.button("Explain", key=f"confusion_explain_{position}"):
            source = f"{run.id} · {SPLITS[split]} · {ids[row]} (predicted {EMOTIONS[predicted]})"
            nav.send_to_explain(image, true_label, source)
