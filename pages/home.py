"""Home: what is loaded, the best models so far, and where to go next.

On a first start (no shipped models, no runs of one's own) it offers to train
a tiny model on the demo set in the background, so that every page has real
results to show within a minute.
"""

import streamlit as st

from core.data import DataError
from dashboard import jobs, nav, pickers, state
from dashboard.photo_upload import photo_upload_section
from dashboard.progress import live_progress
from dashboard.tables import best_first, run_table

DEMO_TRAINING = ["train", "--model", "tiny", "--epochs", "10", "--batch-size", "32", "--lr", "0.003"]
GUIDE = {
    "data.py": "look at the faces: class balance, samples per emotion, your own CSV",
    "train.py": "train a CNN, a parameter-matched DNN or a bagging ensemble, and watch it learn",
    "curves.py": "compare runs: loss and accuracy per epoch, time, parameters, the ablation",
    "confusion.py": "which emotions a model mixes up, and the faces it got wrong",
    "explain.py": "what a model looks at when it decides, with each map's faithfulness and sanity check",
    "trust.py": "every explanation method ranked on many faces: which maps can be believed",
    "filters.py": "what each filter and each emotion looks like to the network",
}

st.title("FER Lab")
st.caption("Train, compare and explain facial-expression classifiers on 48×48 grey faces (FER2013's 7 emotions).")

store = state.run_store()
runs = store.list()
shipped = sum(run.path.parent in store.shipped for run in runs)

data_col, runs_col, busy_col = st.columns(3)
try:
    data_col.metric("Faces loaded", f"{len(state.current_data().data):,}")
except DataError as err:
    data_col.metric("Faces loaded", "—")
    st.error(str(err))
data_col.caption(state.current_source().label)
runs_col.metric("Finished runs", len(runs))
runs_col.caption(f"{shipped} shipped with the app, {len(runs) - shipped} trained here")
busy_col.metric("Training now", len(jobs.active(store)))
busy_col.caption("background trainings on this server")

if runs:
    st.subheader("Best models")
    table = best_first(run_table(pickers.standalone(runs))).head(5)  # ensemble members left out
    st.dataframe(
        table[["run", "kind", "val accuracy", "test accuracy", "data"]],
        hide_index=True,
        column_config={
            "val accuracy": st.column_config.NumberColumn(format="percent"),
            "test accuracy": st.column_config.NumberColumn(format="percent"),
        },
    )
else:
    st.subheader("No trained models yet")
    demo_plan = jobs.plan(DEMO_TRAINING, state.load(state.DEMO).fingerprint)
    status = jobs.status(store, demo_plan)
    if status.state == "running":
        live_progress(demo_plan, key="home_demo")
    else:
        st.info("Train a tiny CNN on the built-in demo set to see every page with real results.")
        if status.state == "failed":
            st.error(f"The last demo training failed:\n\n{status.message}")
        if st.button("Train a demo model (~30 s)", key="home_train_demo", type="primary"):
            try:
                jobs.launch(store, demo_plan, state.DEMO)
            except jobs.Busy as err:
                st.warning(str(err))
            else:
                st.rerun()

photo_upload_section()

st.subheader("What you can do here")
for page in nav.PAGES:
    if page.file in GUIDE:
        st.page_link(nav.page_path(page.file), label=f"**{page.title}** — {GUIDE[page.file]}", icon=page.icon)

