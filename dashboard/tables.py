"""Run summaries as tables: one row per run, read from its stored metrics only.

Home, Curves and the ablation view show different columns of the same rows,
so the numbers can never disagree between pages.
"""

from __future__ import annotations

import pandas as pd

from core.runs import Run
from dashboard.pickers import run_title, setting_name

# Column order of the ablation: what each step adds to the one before.
SETTINGS = {"none": "none", "norm": "normalisation only", "norm+aug": "normalisation + augmentation", "aug": "augmentation only"}


def run_table(runs: list[Run]) -> pd.DataFrame:
    """Everything comparable about ``runs``; accuracies as fractions (NaN where a run has no test split)."""
    rows = []
    for run in runs:
        m = run.metrics
        config = run.config["base"] if run.is_ensemble else run.config
        rows.append(
            {
                "run": run_title(run),
                "id": run.id,
                "kind": f"ensemble x{len(m['members'])}" if run.is_ensemble else "single",
                "arch": config["model"]["arch"],
                "setting": SETTINGS[setting_name(config["model"])],
                "epochs": m.get("epochs_run", config["epochs"]),
                "trainable params": m["params"]["trainable"],
                "non-trainable params": m["params"]["non_trainable"],
                "weights": m.get("stored_as", "float32"),  # float16: packed, accuracies measured with the packed weights
                "val accuracy": m["val"]["accuracy"],
                "test accuracy": m.get("test", {}).get("accuracy", float("nan")),
                "train seconds": m["train_seconds"],
                "hardware": m["hardware"],
                "data": m["data"]["source"],
            }
        )
    return pd.DataFrame(rows)


def best_first(table: pd.DataFrame) -> pd.DataFrame:
    """Sorted by test accuracy, then validation accuracy (runs without a test split last)."""
    return table.sort_values(["test accuracy", "val accuracy"], ascending=False, na_position="last")
