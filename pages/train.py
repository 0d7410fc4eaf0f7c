"""Train: a CNN, a parameter-matched DNN or a bagging ensemble, in the background.

The request is turned into the CLI arguments the training process will get,
and from them into the run id, before anything starts: a configuration
already trained on this data opens the stored run ("cached run"), one that is
training now shows its progress, and only a new one offers to start.
"""

import streamlit as st

from core.figures import training_curves
from core.models import DEFAULT_CNN, PRESETS
from core.runs import split_problem
from core.training import TrainConfig
from dashboard import jobs, nav, pickers, state
from dashboard.progress import live_progress, progress_bar

KINDS = {"cnn": "CNN", "dnn": "DNN matched to a CNN's parameter count", "ensemble": "Ensemble (bagging)"}

st.title("Train")
loaded = pickers.require_data()
source = state.current_source()
st.caption(f"Trains on **{source.label}** ({len(loaded.data):,} faces); change it on the Data page.")

# Widgets forget their values when the user leaves the page (say, to look at the curves while
# this trains); the form's last values are kept here and given back on return.
FORM_KEY = "train_form"
defaults = {"train_kind": "cnn", "train_preset": "tiny" if source.kind == "demo" else DEFAULT_CNN, "train_epochs": 10,
            "train_seed": 0, "train_members": 3, "train_resample": True, "train_normalize": True, "train_augment": True,
            "train_teacher": "none"}
for key, value in defaults.items():
    pickers.seed_widget(key, st.session_state.get(FORM_KEY, {}).get(key, value))

kind = st.radio("What to train", list(KINDS), format_func=KINDS.get, horizontal=True, key="train_kind")
left, right = st.columns(2)
preset = left.selectbox(
    "Which CNN's parameter count the DNN matches" if kind == "dnn" else "Architecture", list(PRESETS), key="train_preset"
)
left.caption(PRESETS[preset].description)
epochs = right.number_input("Epochs", min_value=1, max_value=300, key="train_epochs")
seed = right.number_input("Seed", min_value=0, max_value=2**31 - 1, key="train_seed")
members = left.number_input("Members", min_value=2, max_value=10, key="train_members") if kind == "ensemble" else 0
resample = left.toggle("Bootstrap resamples (bagging); off: every member sees all faces, seeds differ",
                       key="train_resample") if kind == "ensemble" else True
teacher = "none"
if kind == "cnn":
    # Distillation: the chosen run's probabilities on the training faces join the labels as targets.
    teachers = {r.id: r for r in state.run_store().list()
                if split_problem(r, TrainConfig(seed=int(seed)).to_dict(), loaded.fingerprint) is None}
    # The remembered teacher may be gone (deleted) or validated on another split (another seed).
    pickers.seed_widget("train_teacher", "none", valid=["none", *teachers])
    teacher = right.selectbox("Distil from (its answers join the labels as targets)", ["none", *teachers],
                              format_func=pickers.option_title(teachers), key="train_teacher",
                              help="Usually an ensemble trained on this data with the same seed.")
normalize = left.toggle("Normalise grey levels (training mean and std)", key="train_normalize")
augment = left.toggle("Augment (flip, rotate, zoom, shift, shear)", key="train_augment")
st.session_state[FORM_KEY] = {key: st.session_state[key] for key in defaults}

args = ["ensemble" if kind == "ensemble" else "train"]
args += ["--model", "dnn", "--match", preset] if kind == "dnn" else ["--model", preset]
args += ["--epochs", str(epochs), "--seed", str(seed)]
args += [] if augment else ["--no-augment"]
args += [] if normalize else ["--no-normalize"]
args += ["--members", str(members)] if kind == "ensemble" else []
args += [] if resample else ["--no-resample"]
args += [] if teacher == "none" else ["--teacher", teacher]
plan = jobs.plan(args, loaded.fingerprint)
st.caption("The same from a terminal:")
st.code(f"python -m core {' '.join(args)} --data {'<your CSV>' if source.kind == 'upload' else source.ref}", language="bash")

store = state.run_store()
status = jobs.status(store, plan)


def start(label: str) -> None:
    """A button that launches the plan in the background, then reruns to watch it."""
    if st.button(label, key="train_start", type="primary"):
        try:
            jobs.launch(store, plan, source, state.current_upload())
        except jobs.Busy as err:
            st.warning(str(err))
        else:
            st.rerun()


if status.state == "finished":
    run = status.run
    st.success(f"Cached run `{run.id}`: this configuration was already trained on this data, "
               "so here is the stored result instead of training it again.")
    m = run.metrics
    cols = st.columns(3)
    cols[0].metric("Validation accuracy", f"{m['val']['accuracy']:.1%}")
    cols[1].metric("Test accuracy", f"{m['test']['accuracy']:.1%}" if "test" in m else "—")
    cols[2].metric("Training time", f"{m['train_seconds']:.0f} s")
    st.plotly_chart(training_curves({pickers.run_title(run): state.curve(str(run.path))}), key="train_cached_curves")
    curves_col, confusion_col = st.columns(2)
    for col, page in ((curves_col, "curves.py"), (confusion_col, "confusion.py")):
        if col.button(f"Open in {page.removesuffix('.py').title()}", key=f"train_open_{page}"):
            st.session_state[state.RUNS_KEY] = [run.id]
            nav.open_page(page)
elif status.state == "running":
    st.info("Training in the background: you can leave this page, it keeps going.")
    live_progress(plan, key="train_live")
elif status.state == "interrupted":
    st.warning("This training stopped before it finished (the process is gone). "
               "Starting it again resumes from its last finished epoch.")
    start("Resume training")
elif status.state == "failed":
    st.error(f"The training failed:\n\n```\n{status.message}\n```")
    start("Try again")
else:
    start("Start training")

others = {i: tick for i, tick in jobs.active(store).items() if i not in (plan.run_id, *plan.member_ids)}
if others:
    st.subheader("Also training on this server")
    for run_id, tick in others.items():
        progress_bar(tick, prefix=f"{run_id} · ")
