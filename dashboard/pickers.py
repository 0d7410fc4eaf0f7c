"""Widgets that choose what the pages show: the data source, runs, one face.

The user's choices are copied into ``st.session_state`` under shared, non-widget keys
(see ``dashboard.state``), because Streamlit forgets a widget's value once a
page without that widget runs; every picker seeds its widget from the shared
value, so all pages agree on the data and the runs. Every widget has an
explicit key, prefixed by the caller, so two pages never fight over one.

Bad input is shown with ``st.error`` and the ``DataError`` message (which
names the file, row and field), never as a traceback; the previous choice
then stays in use.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import streamlit as st

from core.data import EMOTIONS, DataError
from core.runs import Run
from dashboard import state

_KINDS = {"demo": "Built-in demo set", "path": "A path on the server", "upload": "Upload a CSV"}
_UPLOAD_ERROR_KEY = "data_upload_error"  # (digest, message) of the last upload that failed to parse


def seed_widget(widget_key: str, value: object, valid: Collection | None = None) -> None:
    """Give a widget its starting value unless it already has one on this page
    that is still one of the ``valid`` options (runs get deleted, data changes)."""
    if widget_key not in st.session_state or (valid is not None and st.session_state[widget_key] not in valid):
        st.session_state[widget_key] = value


# --------------------------------------------------------------------- data


def data_source_picker(key: str) -> None:
    """Radio (demo / server path / upload) that switches this session's data on success."""
    current = state.current_source()
    seed_widget(f"{key}_kind", current.kind)
    kind = st.radio("Data source", list(_KINDS), format_func=_KINDS.get, horizontal=True, key=f"{key}_kind")
    if kind == "demo":
        if current.kind != "demo":
            state.use_source(state.DEMO)
        st.caption("Synthetic cartoon faces whose expression lives only in brows, eyes and mouth; "
                   "no download needed, and explanations can be checked against the known regions.")
    elif kind == "path":
        _path_picker(key, current)
    else:
        _upload_picker(key)


def _path_picker(key: str, current: state.DataSource) -> None:
    seed_widget(f"{key}_path", current.ref if current.kind == "path" else "")
    path = st.text_input(
        "Path on the server",
        key=f"{key}_path",
        placeholder="/data/fer2013.csv",
        help="A FER2013 CSV (emotion,pixels,Usage), a homework folder (train.csv, test.csv) "
        "or an image tree <split>/<emotion>/*.png",
    )
    if st.button("Load", key=f"{key}_load", disabled=not path.strip()):
        try:
            source = state.path_source(path)
            state.load(source)
        except DataError as err:
            st.error(str(err))
            return
        state.use_source(source)


def _upload_picker(key: str) -> None:
    file = st.file_uploader(
        "FER2013-style CSV (emotion,pixels[,Usage] or label,feature)",
        type=["csv", "gz"],
        key=f"{key}_upload",
        help="Kept in this server's memory for your session; the file is written to disk only "
        "when you train on it, so the training process can read it.",
    )
    if file is None:
        return
    text = file.getvalue()
    source = state.upload_source(file.name, text)
    failed = st.session_state.get(_UPLOAD_ERROR_KEY)
    if failed is not None and failed[0] == source.digest:
        st.error(failed[1])  # parsed once already: do not parse the same bad file on every rerun
        return
    if state.current_source() == source:
        return
    try:
        state.load(source, text)
    except DataError as err:
        st.session_state[_UPLOAD_ERROR_KEY] = (source.digest, str(err))
        st.error(str(err))
        return
    state.use_source(source, text)


def require_data() -> state.Loaded:
    """This session's faces, or an error box and the end of the page."""
    try:
        return state.current_data()
    except DataError as err:
        st.error(f"{err} Choose another data source on the Data page.")
        st.stop()


# --------------------------------------------------------------------- runs


def setting_name(model: dict) -> str:
    """'none', 'norm', 'norm+aug' or 'aug': the ablation setting of a model spec dict."""
    parts = [name for name, on in (("norm", model.get("normalize")), ("aug", model.get("augment"))) if on]
    return "+".join(parts) or "none"


def run_title(run: Run) -> str:
    """'tiny · norm+aug · 8 ep [3f2a1c]': runs of one architecture differ in the middle. A DNN names the
    CNN whose parameter count it matches ('dnn ~ ferlab-wide'): DNNs of several sizes look alike otherwise.
    A run started from another run's weights (``--init-from``) counts that run's epochs too
    ('70+4 ep'): its own 4 would sell it short."""
    config = run.base_config
    epochs = config.get("epochs", "?")
    if run.start_epochs:
        epochs = f"{run.start_epochs}+{epochs}"
    name = run.label
    if kind(run) == "dnn" and config["model"].get("dnn_match"):
        name += f" ~ {config['model']['dnn_match']}"
    return f"{name} · {setting_name(config['model'])} · {epochs} ep [{run.id.rsplit('-', 1)[-1][:6]}]"


def option_title(runs: dict[str, Run]):
    """A widget's format_func: a run id as its title and validation accuracy; other options as they are."""

    def title(run_id: str) -> str:
        run = runs.get(run_id)
        if run is None:
            return run_id
        return f"{run_title(run)} — val {run.metrics['val']['accuracy']:.1%}"

    return title


def on_real_faces(run: Run) -> bool:
    """Trained on real faces (FER2013 or the user's), not the built-in demo set."""
    return run.metrics.get("data", {}).get("source") != "demo"


def _preferred(runs: list[Run], prefer: Callable[[Run], bool]) -> list[Run]:
    """The runs ``prefer`` picks, or all when it picks none: what a picker starts with."""
    return [r for r in runs if prefer(r)] or runs


def standalone(runs: list[Run]) -> list[Run]:
    """``runs`` without ensemble members (their ensemble stands for them), except, per data set, the best
    plain run by validation (one trained on every training face, not on a bootstrap resample): a deep
    ensemble's member, or a run that ``combine`` put into an ensemble, is a model in its own right, and a
    comparison needs the best single net beside the ensemble; a bagged member saw 63% of the faces."""
    members = {m for r in runs if r.is_ensemble for m in r.config["members"]}
    best: dict[str, Run] = {}
    for run in runs:
        fingerprint = run.metrics["data"]["fingerprint"]
        if not run.is_ensemble and not run.is_bagged and (
            fingerprint not in best or run.metrics["val"]["accuracy"] > best[fingerprint].metrics["val"]["accuracy"]
        ):
            best[fingerprint] = run
    members -= {run.id for run in best.values()}
    return [r for r in runs if r.id not in members]


def kind(run: Run) -> str:
    """'cnn', 'dnn' or 'ensemble': what a comparison wants one of each of."""
    if run.is_ensemble:
        return "ensemble"
    return "dnn" if run.base_config["model"]["arch"] == "dnn" else "cnn"


def best_of_each_kind(runs: list[Run]) -> list[Run]:
    """The best single CNN, DNN and ensemble by validation accuracy (those there are), in that order."""
    best: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.metrics["val"]["accuracy"], reverse=True):
        best.setdefault(kind(run), run)
    return [best[k] for k in ("cnn", "dnn", "ensemble") if k in best]


def runs_picker(runs: list[Run], key: str, default_count: int = 7, prefer: Callable[[Run], bool] = on_real_faces,
                one_per_kind: bool = False) -> list[Run]:
    """Several runs (for comparisons); starts with the runs the user chose on any page, else the newest few ``standalone``
    runs that ``prefer`` picks (by default the real-face runs, so a fresh clone compares the shipped
    FER2013 models: the CNNs, a DNN matched to each CNN size and the ensembles), or with ``one_per_kind``
    the best CNN, DNN and ensemble of those: for views where each model costs seconds (Explain)."""
    by_id = {r.id: r for r in runs}
    shared = [i for i in st.session_state.get(state.RUNS_KEY, []) if i in by_id]
    candidates = standalone(_preferred(runs, prefer))
    default = [r.id for r in best_of_each_kind(candidates)] if one_per_kind else [r.id for r in candidates][-default_count:]
    seed_widget(key, shared or default)
    st.session_state[key] = [i for i in st.session_state[key] if i in by_id]  # drop deleted runs
    chosen = st.multiselect("Runs", list(by_id), format_func=option_title(by_id), key=key, on_change=_share_runs, args=(key,))
    return [by_id[i] for i in chosen]


def _share_runs(widget_key: str) -> None:
    """A user's choice of runs, for the other pages to start with. Only a choice is shared, not a page's
    default: Explain's default (three models) would otherwise be Curves' seven, at seconds a model."""
    st.session_state[state.RUNS_KEY] = list(st.session_state[widget_key])


def _share_run(widget_key: str) -> None:
    """A user's choice of one run, put first (the focus) among the shared runs."""
    chosen = st.session_state[widget_key]
    st.session_state[state.RUNS_KEY] = [chosen] + [i for i in st.session_state.get(state.RUNS_KEY, []) if i != chosen]


def run_picker(runs: list[Run], key: str, label: str = "Run", prefer: Callable[[Run], bool] = on_real_faces) -> Run | None:
    """One run; starts with the first run the user chose on any page, else the best by validation accuracy among
    those ``prefer`` picks (validation accuracies of different data sets do not compare)."""
    if not runs:
        return None
    by_id = {r.id: r for r in runs}
    shared = [i for i in st.session_state.get(state.RUNS_KEY, []) if i in by_id]
    best = max(_preferred(runs, prefer), key=lambda r: r.metrics["val"]["accuracy"]).id
    seed_widget(key, shared[0] if shared else best, valid=by_id)
    chosen = st.selectbox(label, list(by_id), format_func=option_title(by_id), key=key, on_change=_share_run, args=(key,))
    return by_id[chosen]


# ------------------------------------------------------------------- images


def image_picker(loaded: state.Loaded, key: str) -> int:
    """Row index (into the whole data set) of one face chosen by split and position."""
    data = loaded.data
    left, right = st.columns(2)
    largest = max(data.split_names(), key=lambda name: int((data.splits == name).sum()))
    seed_widget(f"{key}_split", largest, valid=data.split_names())
    split = left.selectbox("Split", data.split_names(), key=f"{key}_split")
    rows = np.flatnonzero(data.splits == split)
    seed_widget(f"{key}_index", 0)
    # A smaller split (or another data set) can leave the old number out of range.
    st.session_state[f"{key}_index"] = min(int(st.session_state[f"{key}_index"]), len(rows) - 1)
    position = right.number_input(
        f"Face number (0–{len(rows) - 1})", min_value=0, max_value=len(rows) - 1, step=1, key=f"{key}_index"
    )
    return int(rows[int(position)])


def emotion_name(label: int) -> str:
    return EMOTIONS[label] if label >= 0 else "unlabelled"
