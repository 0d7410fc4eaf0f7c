"""Which method to trust? Every explainer scored on the same faces by the checks of ``core.explain.trust``.

One table, one row per method, so the methods can be ranked side by side:
faithfulness (the deletion + insertion gain over random orders, mean over
faces), the sanity check (share of faces whose map, with every layer
re-initialised, rank-correlates below ``trust.PASS_SPEARMAN`` with the
trained model's map), ground truth (mass on the expressive regions against
their share of the face, and the pointing game; only when masks are given,
i.e. on the demo set) and the seconds each part takes per face on this
machine. The "Which method to trust?" view and ``bench/trust.py`` both
print this table.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import keras
import numpy as np
import pandas as pd

from core.data import FaceDataset
from core.evaluation import predict_probs
from core.explain import EXPLAINERS
from core.explain.base import as_faces
from core.explain.trust import deletion_insertion, ground_truth_mass, passes, sanity_check
from core.runs import REPORT_SPLIT

Progress = Callable[[str, int, int], None]  # (what is being done, steps done, steps in all)

COLUMNS = {  # column -> what it means (the dashboard shows these as help)
    "method": "the explainer",
    "gain": "faithfulness: (random - map) deletion AUC + (map - random) insertion AUC; > 0 beats chance",
    "gain_sem": "standard error of the mean gain over faces",
    "deletion_auc": "probability area while deleting the map's pixels first (lower is better)",
    "insertion_auc": "probability area while revealing the map's pixels first (higher is better)",
    "random_deletion_auc": "the same for random pixel orders",
    "random_insertion_auc": "the same for random pixel orders",
    "sanity_spearman": "rank correlation with the original map once every layer is random (lower is better)",
    "sanity_pass": "share of checked faces that pass the sanity check",
    "mass_ratio": "ground truth: map mass on the expressive regions / their share of the face (> 1 beats chance)",
    "pointing": "ground truth: share of maps whose peak falls on the expressive regions",
    "pointing_random": "what a random peak scores in the pointing game",
    "explain_s": "seconds per face to compute the map",
    "faithfulness_s": "seconds per face for the deletion and insertion curves",
    "sanity_s": "seconds per face for the cascading randomisation",
}


def held_out_sample(data: FaceDataset, n: int, seed: int = 0) -> FaceDataset:
    """``n`` faces (or all, if fewer) drawn at random (seeded) from the held-out split, else from the whole set.

    Held-out faces were never trained on, so their maps show what the model
    does on faces it has to generalise to; the dashboard and the benchmark
    draw the same faces for the same (data, n, seed).
    """
    pool = data.split(REPORT_SPLIT) if REPORT_SPLIT in data.split_names() else data
    pick = np.random.default_rng(seed).choice(len(pool), size=min(n, len(pool)), replace=False)
    return pool.subset(np.sort(pick))


def compare_methods(
    model: keras.Model,
    faces: np.ndarray,
    targets: np.ndarray | None = None,
    methods: Mapping[str, Mapping] | None = None,
    masks: np.ndarray | None = None,
    sanity_faces: int = 3,
    steps: int = 20,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """(N, 48, 48) raw faces, (N,) classes -> one row per method (columns: ``COLUMNS`` + ``title``, ``note``).

    ``targets``: the class each map explains; None = each face's own
    prediction, the class the Explain view shows first.

    ``methods``: {EXPLAINERS key: its knobs}; None = every method with its
    defaults. A method the model does not support (a CAM method on a DNN)
    gets a row with only a ``note``. The sanity check, ~20 re-explanations a
    face, runs on the first ``sanity_faces`` faces; 0 skips it. Rows are
    sorted by faithfulness gain, best first.
    """
    x = as_faces(faces)[..., 0]  # (N, 48, 48)
    if targets is None:
        targets = predict_probs(model, x).argmax(axis=1)
    targets = np.asarray(targets, np.int32).reshape(-1)
    if len(x) != len(targets) or not len(x):
        raise ValueError(f"need one target per face and at least one face, got {len(x)} faces and {len(targets)} targets")
    if masks is not None and np.shape(masks) != x.shape:
        raise ValueError(f"masks must be {x.shape} like the faces, got {np.shape(masks)}")
    methods = {key: {} for key in EXPLAINERS} if methods is None else methods
    n_sanity = min(sanity_faces, len(x))
    total, done = len(methods) * (1 + len(x) + n_sanity), 0
    deletion_insertion(model, x[0], int(targets[0]), np.ones(x.shape[1:]), steps=steps)  # warms up the curves' forward pass
    rows = []
    for key, knobs in methods.items():
        cls = EXPLAINERS[key]
        row: dict = {"method": key, "title": cls.title, "note": ""}
        rows.append(row)
        try:
            explainer = cls(model, **knobs)
        except ValueError as error:  # e.g. Grad-CAM on a DNN
            row["note"] = str(error)
            done += 1 + len(x) + n_sanity
            continue
        _report(progress, f"{cls.title}: maps", done, total)
        explainer.explain(x[:1], targets[:1])  # traces its functions once: the times below are steady-state
        start = time.perf_counter()
        maps = explainer.explain(x, targets)  # (N, 48, 48)
        row["explain_s"] = (time.perf_counter() - start) / len(x)
        done += 1

        start, curves = time.perf_counter(), []
        for i, (face, target, saliency_map) in enumerate(zip(x, targets, maps)):
            _report(progress, f"{cls.title}: deletion and insertion, face {i + 1}", done, total)
            curves.append(deletion_insertion(model, face, int(target), saliency_map, steps=steps))
            done += 1
        row["faithfulness_s"] = (time.perf_counter() - start) / len(x)
        gains = np.array([c["gain"] for c in curves])
        row["gain"] = float(gains.mean())
        row["gain_sem"] = float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan")
        for name in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
            row[name] = float(np.mean([c[name] for c in curves]))

        if n_sanity:
            start, finals, passed = time.perf_counter(), [], []
            for i in range(n_sanity):
                _report(progress, f"{cls.title}: sanity check, face {i + 1}", done, total)
                cascade = sanity_check(model, cls, x[i], int(targets[i]), **knobs)
                finals.append(cascade[-1]["spearman"])
                passed.append(passes(cascade))
                done += 1
            row["sanity_s"] = (time.perf_counter() - start) / n_sanity
            row["sanity_spearman"] = float(np.mean(finals))
            row["sanity_pass"] = float(np.mean(passed))

        if masks is not None:
            truth = ground_truth_mass(maps, masks)
            row.update(mass_ratio=truth["mass_ratio"], pointing=truth["pointing"], pointing_random=truth["pointing_random"])
    _report(progress, "done", total, total)
    table = pd.DataFrame(rows).reindex(columns=["method", "title", *list(COLUMNS)[1:], "note"])
    return table.sort_values("gain", ascending=False, na_position="last", ignore_index=True)


def _report(progress: Progress | None, what: str, done: int, total: int) -> None:
    if progress is not None:
        progress(what, done, total)
