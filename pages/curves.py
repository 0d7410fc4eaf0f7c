"""Curves: any set of runs on one chart, their costs side by side, and the ablation.

Train is dashed and validation solid in one colour per run, so over-fitting
(the two drifting apart) and the effect of a setting (two colours apart) are
both visible at a glance.
"""

import pandas as pd
import streamlit as st

from core.figures import ablation_chart, epoch_times, training_curves
from dashboard import nav, pickers, state
from dashboard.tables import SETTINGS, run_table

PERCENT = st.column_config.NumberColumn(format="percent")
SUMMARY_COLUMNS = ["run", "kind", "epochs", "trainable params", "non-trainable params", "weights", "val accuracy",
                   "test accuracy", "train seconds", "hardware", "data"]

st.title("Curves")
runs = state.run_store().list()
if not runs:
    nav.stop_without_runs()

chosen = pickers.runs_picker(runs, key="curves_runs")
if chosen:
    histories = {pickers.run_title(run): state.curve(str(run.path)) for run in chosen}
    st.subheader("Loss and accuracy per epoch")
    st.plotly_chart(training_curves(histories), key="curves_training")
    st.subheader("Time per epoch")
    st.plotly_chart(epoch_times(histories), key="curves_times")
    st.subheader("Summary")
    st.caption("Validation accuracy is the best epoch's (the one kept). An ensemble's parameters and "
               "time are its members' sums; its curve is the members' mean over the epochs all of them have "
               "(the shortest member's), a rough picture when the members trained on different schedules. "
               "Weights 'float16' or 'int8': the kernels are stored at half or a quarter of the bytes to fit the repo, and the accuracies are "
               "measured with them.")
    st.dataframe(
        run_table(chosen)[SUMMARY_COLUMNS],
        hide_index=True,
        column_config={"val accuracy": PERCENT, "test accuracy": PERCENT,
                       "train seconds": st.column_config.NumberColumn(format="%.0f")},
    )
else:
    st.info("Choose one or more runs above.")

st.subheader("Ablation: normalisation, then augmentation")
st.caption("Single runs of the same architecture grouped by setting; where a setting has several runs "
           "the best validation accuracy counts. Compare runs of equal length: see the epochs column.")
singles = run_table([run for run in runs if not run.is_ensemble])
if singles.empty:
    st.info("No single-model runs yet.")
    st.stop()
sources = singles["data"].value_counts().index.tolist()
data_source = st.selectbox("Trained on", sources, key="curves_ablation_data")
rows = singles[singles["data"] == data_source]
best = rows.loc[rows.groupby(["arch", "setting"])["val accuracy"].idxmax()].copy()
best["setting"] = pd.Categorical(best["setting"], categories=list(SETTINGS.values()), ordered=True)
best = best.sort_values(["arch", "setting"])
st.plotly_chart(ablation_chart(best, value="val accuracy"), key="curves_ablation")
st.dataframe(
    best[["arch", "setting", "epochs", "val accuracy", "test accuracy", "run"]],
    hide_index=True,
    column_config={"val accuracy": PERCENT, "test accuracy": PERCENT},
)
for arch, group in best.groupby("arch"):
    missing = [s for s in list(SETTINGS.values())[:3] if s not in set(group["setting"])]
    if missing:
        st.caption(f"{arch}: no run with {', '.join(missing)} yet (Train page: switch normalisation/augmentation off).")
