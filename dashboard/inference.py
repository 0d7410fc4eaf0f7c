"""What models say about single faces, cached for the whole server.

A class of 30 looks at the same few faces with the same few models, and a
LIME map or a grid of gradient-ascent pictures costs seconds of CPU, so every
result here is computed once per server with ``st.cache_data``. The cache key
is the run's *path* (the model itself comes from ``state.model``, loaded once
with ``st.cache_resource``; hashing a Keras model would be slow and
meaningless) plus a digest of the face's bytes; the faces themselves are passed
as ``_``-prefixed arguments, which Streamlit leaves out of the key.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.data import FaceDataset
from core.evaluation import predict_probs
from core.explain import EXPLAINERS
from core.explain.compare import Progress, compare_methods
from core.explain.filters import class_images, feature_maps, filter_images
from core.explain.gradcam import cam_sources
from core.explain.trust import deletion_insertion, sanity_check
from core.runs import Run
from dashboard import state


def digest(data: bytes | np.ndarray) -> str:
    """SHA-256 of a file's bytes, or of an array's shape, type and pixels (equal faces, equal key)."""
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data)
        data = f"{array.shape}{array.dtype}".encode() + array.tobytes()
    return hashlib.sha256(data).hexdigest()


@st.cache_data(max_entries=256, show_spinner=False)
def probabilities(run_path: str, faces_digest: str, _faces: np.ndarray, tta: str = "none") -> np.ndarray:
    """(N, 48, 48) uint8 faces -> (N, 7) probabilities of the run's model (an ensemble: averaged),
    over the ``tta`` views (``core.evaluation.TTA_MODES``)."""
    return predict_probs(state.model(run_path), np.asarray(_faces, np.uint8), tta=tta)


@st.cache_data(max_entries=64, show_spinner=False)
def unsupported(run_path: str, method: str) -> str | None:
    """A short note on why ``method`` cannot explain this run's model, or None when it can.

    Only the CAM methods have a precondition (``needs_conv``): convolutional feature
    maps, which a DNN lacks (``cam_sources`` raises ValueError then).
    """
    if not EXPLAINERS[method].needs_conv:
        return None
    try:
        cam_sources(state.model(run_path))
    except ValueError:
        lacking = "this ensemble has a DNN member" if Run(Path(run_path)).is_ensemble else "this model (a DNN) has none"
        return f"needs convolutional feature maps, and {lacking}; the other methods work on any model."
    return None


@st.cache_data(max_entries=2048, show_spinner=False)
def explanation(
    run_path: str, face_digest: str, _face: np.ndarray, method: str, target: int, score: str, knobs: dict[str, float]
) -> np.ndarray:
    """(48, 48) map in 0..1: which pixels of the face drove ``target``'s score, by ``method``."""
    explainer = EXPLAINERS[method](state.model(run_path), score=score, **knobs)
    return explainer.explain(np.asarray(_face)[None], np.array([target]))[0]


@st.cache_data(max_entries=128, show_spinner=False)
def filter_pictures(run_path: str, layer: str, start: int, count: int, steps: int) -> np.ndarray:
    """(count, 48, 48) uint8: what maximally activates filters start..start+count-1 (one batched ascent)."""
    return filter_images(state.model(run_path), layer, np.arange(start, start + count), steps)


@st.cache_data(max_entries=32, show_spinner=False)
def class_pictures(run_path: str, steps: int) -> np.ndarray:
    """(7, 48, 48) uint8: a face grown from noise towards each emotion."""
    return class_images(state.model(run_path), steps)


@st.cache_data(max_entries=256, show_spinner=False)
def layer_response(run_path: str, layer: str, face_digest: str, _face: np.ndarray) -> np.ndarray:
    """(C, h, w) float32: every filter's feature map of one face."""
    return feature_maps(state.model(run_path), layer, _face)


@st.cache_data(max_entries=2048, show_spinner=False)
def faithfulness(
    run_path: str, face_digest: str, _face: np.ndarray, method: str, target: int, score: str, knobs: dict[str, float]
) -> dict:
    """Deletion and insertion curves of that map (``core.explain.trust.deletion_insertion``), with their AUCs."""
    heat = explanation(run_path, face_digest, _face, method, target, score, knobs)
    return deletion_insertion(state.model(run_path), _face, target, heat)


@st.cache_data(max_entries=256, show_spinner=False)
def sanity(
    run_path: str, face_digest: str, _face: np.ndarray, method: str, target: int, score: str, knobs: dict[str, float]
) -> list[dict]:
    """The cascading randomisation of that map (``core.explain.trust.sanity_check``), on a copy of the model."""
    return sanity_check(state.model(run_path), EXPLAINERS[method], _face, target, score=score, **knobs)



# ------------------------------------------------------- method comparisons


WAITING = "waiting: another comparison is running on this server, yours starts when it ends"


@st.cache_resource
def _comparisons() -> dict:
    """Server-wide: one worker thread that runs the comparisons one at a time, and each key's job.

    A comparison takes minutes of CPU; when a whole class presses "Compare"
    together, the first starts it and the others follow the same job. It runs
    in the worker, not in a student's script thread: a rerun there (a slider
    moved, another page opened) stops that thread, and would stop the work
    everyone is waiting for.
    """
    return {"pool": ThreadPoolExecutor(max_workers=1, thread_name_prefix="comparison"), "lock": threading.Lock(), "jobs": {}}


class _Job:
    """One comparison in the worker: its future, and its last progress tick for every session that follows it."""

    def __init__(self, pool: ThreadPoolExecutor, model, sample: FaceDataset, methods: dict[str, dict], sanity_faces: int):
        self.tick: tuple[str, int, int] = ("starting…", 0, 1)
        self.future: Future = pool.submit(compare_methods, model, sample.images, None, methods, masks=sample.masks,
                                          sanity_faces=sanity_faces, progress=self._progress)

    def _progress(self, what: str, done: int, total: int) -> None:
        self.tick = (what, done, total)

    @property
    def failed(self) -> bool:
        return self.future.done() and self.future.exception() is not None


def comparison(key: tuple) -> pd.DataFrame | None:
    """The finished table for ``key``, if any session computed it."""
    job = _comparisons()["jobs"].get(key)
    return job.future.result() if job is not None and job.future.done() and not job.failed else None


def pending(key: tuple) -> bool:
    """Whether the comparison for ``key`` is queued or running (a student who left its page comes back to it)."""
    job = _comparisons()["jobs"].get(key)
    return job is not None and not job.future.done()


def compare(key: tuple, run_path: str, sample: FaceDataset, methods: dict[str, dict], sanity_faces: int,
            progress: Progress) -> pd.DataFrame:
    """``core.explain.compare.compare_methods`` on ``sample`` with the run's model, computed once per ``key``
    (started now, or followed if another session started it; a failed one starts again).

    ``progress`` follows the worker's ticks, and while the worker is busy with
    another key says so (a bar frozen at "starting…" would look like a hang)."""
    store = _comparisons()
    with store["lock"]:
        job = store["jobs"].get(key)
        if job is None or job.failed:
            job = store["jobs"][key] = _Job(store["pool"], state.model(run_path), sample, methods, sanity_faces)
    while True:
        try:
            return job.future.result(timeout=0.5)
        except TimeoutError:
            progress(*(job.tick if job.future.running() else (WAITING, 0, 1)))
