"""Which method to trust? Every explanation method scored on the same faces, side by side.

Maps that look convincing are not necessarily right. This page runs the
checks of ``core.explain.trust`` over many held-out faces for one model and
ranks the methods: how much their pixel order beats a random one at
destroying and restoring the prediction (faithfulness), whether their maps
fall apart when the model's weights are randomised (sanity), how much of
their mass lies on the expressive regions where the demo set has them
(ground truth) and what each costs. Tables are computed once per server and
shared by every session.
"""

import streamlit as st

from core.explain import EXPLAINERS
from core.explain.compare import COLUMNS, held_out_sample
from core.explain.trust import PASS_SPEARMAN
from core.figures import method_ranking
from dashboard import inference, nav, pickers, state

LABELS = {"gain_sem": "± (sem)", "deletion_auc": "deletion AUC", "insertion_auc": "insertion AUC",
          "random_deletion_auc": "random deletion AUC", "random_insertion_auc": "random insertion AUC",
          "sanity_spearman": "sanity: final Spearman", "sanity_pass": "sanity passed", "mass_ratio": "GT mass ratio",
          "pointing": "pointing game", "pointing_random": "pointing: random", "explain_s": "map s/face",
          "faithfulness_s": "curves s/face", "sanity_s": "sanity s/face"}

st.title("Which method to trust?")
runs = state.run_store().list()
if not runs:
    nav.stop_without_runs()
st.caption("Each method explains the model's own prediction on faces it never trained on (the held-out split). "
           "Faithfulness: grey out the map's most important pixels first (deletion) or reveal them first on a grey "
           "face (insertion) and follow the probability; the gain is how much better than random pixel orders that "
           f"does. Sanity: randomise every layer of a copy of the model; a map still rank-correlated above "
           f"{PASS_SPEARMAN} with the original explains the face, not the model.")

loaded = pickers.require_data()
# Start with a model of the loaded data: on the demo set, its masks give the ground truth.
run = pickers.run_picker(runs, key="trust_run", label="Model",
                         prefer=lambda r: r.metrics.get("data", {}).get("fingerprint") == loaded.fingerprint)
n_col, sanity_col, lime_col = st.columns(3)
n_faces = n_col.slider("Faces", 5, 300, 100, 5, key="trust_faces")
sanity_faces = sanity_col.slider("Faces for the sanity check", 0, 10, 3, key="trust_sanity_faces",
                                 help="Each needs one map per randomised layer: the slowest check.")
lime_samples = lime_col.slider("LIME: perturbed samples", 100, 2000, 500, 100, key="trust_lime_samples")
pickers.seed_widget("trust_methods", list(EXPLAINERS))
methods = st.multiselect("Methods", list(EXPLAINERS), format_func=lambda k: EXPLAINERS[k].title, key="trust_methods")
if not methods:
    st.info("Choose at least one method.")
    st.stop()

sample = held_out_sample(loaded.data, n_faces)
knobs = {method: ({"n_samples": lime_samples} if method == "lime" else {}) for method in methods}
key = (str(run.path), loaded.fingerprint, n_faces, sanity_faces, lime_samples, tuple(methods))
table = inference.comparison(key)
if table is None:
    intro = st.empty()
    with intro.container():
        st.info(f"{len(sample)} faces of {state.current_source().label}, {len(methods)} methods: this takes a few "
                "minutes of CPU (LIME and the sanity check the longest). The result is kept for everyone on this server.")
        if not inference.pending(key) and not st.button("Compare the methods", key="trust_compute", type="primary"):
            st.stop()
    bar = intro.progress(0.0, text="starting…")
    table = inference.compare(key, str(run.path), sample, knobs, sanity_faces,
                              progress=lambda what, done, total: bar.progress(done / total, text=what))
    intro.empty()

shown = table[table["gain"].notna()]
if len(shown):  # none when no chosen method applies to the model (a DNN with only Grad-CAM): the notes below say why
    st.subheader("Ranking")
    st.plotly_chart(method_ranking(shown, PASS_SPEARMAN), key="trust_chart")
    columns = [c for c in ["title", *list(COLUMNS)[1:]] if table[c].notna().any()]
    formats = {"sanity_pass": "percent", "pointing": "percent", "pointing_random": "percent"}
    st.dataframe(
        shown[columns],
        hide_index=True,
        column_config={"title": st.column_config.TextColumn("method")}
        | {c: st.column_config.NumberColumn(LABELS.get(c, c), help=COLUMNS[c], format=formats.get(c, "%.3f"))
           for c in columns if c != "title"},
    )
for row in table[table["gain"].isna()].itertuples():
    st.info(f"**{row.title}**: {row.note}")
if sample.masks is None:
    st.caption("Ground truth needs the demo set's masks of brows, eyes and mouth; switch the data to the demo set "
               "on the Data page to see it.")
