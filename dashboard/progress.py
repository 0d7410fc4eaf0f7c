"""Live view of a background training: progress bar and curves, refreshed every 2 s.

Only this fragment reruns while a training goes on (``st.fragment(run_every=2)``),
not the whole page; it reads the files the training process writes
(``progress.json``, ``history.csv``). When the training ends it reruns the
whole page once, which then shows the finished run instead of this panel.
"""

from __future__ import annotations

import streamlit as st

from core.figures import training_curves
from core.training import read_history
from dashboard import jobs, state


@st.fragment(run_every=2)
def live_progress(plan: jobs.Plan, key: str) -> None:
    """Progress of ``plan`` while it runs; a full rerun as soon as it stops running."""
    store = state.run_store()
    status = jobs.status(store, plan)
    if status.state != "running":
        st.rerun()
    prefix = ""
    if plan.is_ensemble:
        prefix = f"member {min(status.members_done + 1, len(plan.member_ids))} of {len(plan.member_ids)} · "
    progress_bar(status.tick, prefix)
    if status.training is not None:
        history = read_history(store.root / status.training)
        if len(history):
            st.plotly_chart(training_curves({status.training: history}), key=f"{key}_curves")


def progress_bar(tick: dict | None, prefix: str = "") -> None:
    """One training's progress.json as a bar with epoch, batch and the latest loss/accuracy."""
    if tick is None:
        st.progress(0.0, text=f"{prefix}starting (loading TensorFlow and the data)…")
        return
    fraction = (tick["epoch"] + tick["batch"] / max(tick["batches"], 1)) / max(tick["epochs"], 1)
    logs = "  ".join(f"{name} {value:.3f}" for name, value in tick["logs"].items())
    text = f"{prefix}epoch {tick['epoch'] + 1}/{tick['epochs']} · batch {tick['batch']}/{tick['batches']}  {logs}"
    st.progress(min(fraction, 1.0), text=text)
