"""What the pages share: the chosen data source, and loaders cached for the whole server.

A class of 30 opens the app at once, so anything costly (a data set, a Keras
model, a run's predictions) is loaded once per server with ``st.cache_resource``
/ ``st.cache_data`` and then shared. Shared objects are read-only by contract:
a data set's arrays are frozen here so an accidental in-place edit raises
instead of changing every other student's view, and Keras models must only
be wrapped (``core.models.logits_model``), never modified.

Per-session choices (which data, which runs) live in ``st.session_state`` under
keys that are not widget keys, so they survive switching pages.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import streamlit as st

from core.data import FaceDataset, load_csv, load_dataset, user_path
from core.runs import Run, RunStore, default_root

SOURCE_KEY = "data_source"  # the DataSource in use
UPLOAD_KEY = "data_upload"  # bytes of the uploaded CSV: kept in memory, never written by the page
RUNS_KEY = "selected_runs"  # run ids chosen on any page, most recent focus first


@dataclass(frozen=True)
class DataSource:
    """Where the faces come from: the built-in demo, a path on the server, or an upload.

    For an upload ``ref`` is the file's name and ``digest`` its SHA-256, so two
    students uploading the same file share one parsed copy.
    """

    kind: str  # "demo" | "path" | "upload"
    ref: str
    digest: str = ""

    @property
    def label(self) -> str:
        if self.kind == "demo":
            return "built-in demo set"
        if self.kind == "upload":
            return f"uploaded {self.ref}"
        return self.ref


DEMO = DataSource("demo", "demo")


@dataclass(frozen=True)
class Loaded:
    """A data set with its fingerprint, computed once (hashing all of FER2013 takes a while)."""

    data: FaceDataset
    fingerprint: str


def path_source(text: str) -> DataSource:
    """A server path as the user typed it, made absolute, so one file is one cached load and one label
    however it was written. ``os.path.realpath``, not ``Path.resolve``: a symlink loop then reads as a
    missing file, not a RuntimeError; DataError for a ``~user`` this server does not have."""
    return DataSource("path", os.path.realpath(user_path(text.strip())))


def upload_source(name: str, text: bytes) -> DataSource:
    return DataSource("upload", Path(name).name, hashlib.sha256(text).hexdigest()[:16])


def _freeze(data: FaceDataset) -> Loaded:
    for array in (data.images, data.labels, data.splits, data.ids, data.masks):
        if array is not None:
            array.flags.writeable = False
    return Loaded(data, data.fingerprint())


@st.cache_resource(max_entries=8, show_spinner="Loading the faces…")
def _load_source(source: str) -> Loaded:
    """The demo set or a server path. Errors are not cached, so a fixed file loads on retry."""
    return _freeze(load_dataset(source))


@st.cache_resource(max_entries=32, show_spinner="Reading the uploaded CSV…")
def _load_upload(name: str, digest: str, _text: bytes) -> Loaded:
    """Keyed by the digest: the bytes themselves are not hashed again on every rerun."""
    return _freeze(load_csv(name, text=_text))


def load(source: DataSource, upload: bytes | None = None) -> Loaded:
    """The faces of ``source``; raises ``DataError`` (naming file, row, field) on bad input."""
    if source.kind == "upload":
        if upload is None:
            raise ValueError("an uploaded source needs its bytes")
        return _load_upload(source.ref, source.digest, upload)
    return _load_source(source.ref)


def current_source() -> DataSource:
    return st.session_state.get(SOURCE_KEY, DEMO)


def current_upload() -> bytes | None:
    return st.session_state.get(UPLOAD_KEY)


def current_data() -> Loaded:
    """This session's faces (the demo set until the user picks something else)."""
    return load(current_source(), current_upload())


def use_source(source: DataSource, upload: bytes | None = None) -> None:
    """Make ``source`` this session's data on every page."""
    st.session_state[SOURCE_KEY] = source
    if upload is not None:
        st.session_state[UPLOAD_KEY] = upload


@st.cache_resource
def _store(root: str) -> RunStore:
    return RunStore(root)


def run_store() -> RunStore:
    """The server's run store ($FERLAB_RUNS or ./runs, plus the shipped models)."""
    return _store(str(default_root().resolve()))


@st.cache_resource(max_entries=16, show_spinner="Loading the model…")
def model(run_path: str) -> keras.Model:
    """A finished run's Keras model, shared by every session: never modify it in place."""
    return Run(Path(run_path)).model()


@st.cache_data(max_entries=64, show_spinner=False)
def predictions(run_path: str) -> dict[str, np.ndarray]:
    """A finished run's stored predictions (labels, probabilities, face ids per split)."""
    return Run(Path(run_path)).predictions()


@st.cache_data(max_entries=256, show_spinner=False)
def curve(run_path: str) -> pd.DataFrame:
    """A finished run's per-epoch curve, from the run it started from on (``Run.curve``;
    finished runs never change, so caching is safe)."""
    return Run(Path(run_path)).curve()
