"""Run summaries as tables: one row per run, read from its stored metrics only.

Home, Curves and the ablation view show different columns of the same rows,
so the numbers can never disagree between pages.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.runs import Run
from dashboard.pickers import on_real_faces, run_title, setting_name

# Column order of the ablation: what each step adds to the one before.
SETTINGS = {"none": "none", "norm": "normalisation only", "norm+aug": "normalisation + augmentation", "aug": "augmentation only"}


def run_table(runs: list[Run]) -> pd.DataFrame:
    """Everything comparable about ``runs``; accuracies as fractions (NaN where a run has no test split)."""
    rows = []
    for run in runs:
        m = run.metrics
        config = run.base_config
        rows.append(
            {
                "run": run_title(run),
                "id": run.id,
                "kind": f"ensemble x{len(m['members'])}" if run.is_ensemble else "single",
                "arch": run.arch,
                "setting": SETTINGS[setting_name(config["model"])],
                "epochs": m.get("epochs_run", config["epochs"]) + run.start_epochs,  # with the run it started from
                "trainable params": m["params"]["trainable"],
                "non-trainable params": m["params"]["non_trainable"],
                "weights": run.weights,  # float16 or int8: packed, accuracies measured with the packed weights
                "val accuracy": m["val"]["accuracy"],
                "test accuracy": m.get("test", {}).get("accuracy", float("nan")),
                "train seconds": m["train_seconds"],
                "hardware": m["hardware"],
                "data": data_name(m["data"]["source"]),
                "real faces": on_real_faces(run),
            }
        )
    return pd.DataFrame(rows)


def data_name(source: str) -> str:
    """'fer2013.csv.gz' for '../shared/fer2013/fer2013.csv.gz' or '/work/shared/…/fer2013.csv.gz':
    the same data set reads the same, and no machine's folders show."""
    return Path(source).name or source


def best_first(table: pd.DataFrame) -> pd.DataFrame:
    """Runs on real faces first (a demo-set accuracy says nothing about FER2013), each group
    sorted by test accuracy, then validation accuracy (runs without a test split last)."""
    return table.sort_values(["real faces", "test accuracy", "val accuracy"], ascending=False, na_position="last")
