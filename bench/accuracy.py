"""Held-out accuracy of stored runs, with and without test-time augmentation (each of core.evaluation.TTA_MODES).

    python bench/accuracy.py --data ../shared/fer2013/fer2013.csv.gz --split PublicTest RUN [RUN ...]

RUN is a run id (or unique prefix) in the store (``--runs``, $FERLAB_RUNS or
./runs) or among the shipped runs in models/. An ensemble prints one row per
combination rule. The reference reports' PublicTest figures are printed
beside ours, so the table can go into the README as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import load_dataset  # noqa: E402
from core.evaluation import TTA_MODES  # noqa: E402
from core.runs import RunStore, evaluate  # noqa: E402

TTA_TITLES = {"flip": "flip", "shifts": "flip & shift", "rotate-zoom": "flip & rotate-zoom"}
REFERENCE = [
    ("report: single CNN", "0.6851 / 0.7074 / 0.7191"),
    ("report: 7-CNN bagged ensemble", "0.7292"),
    ("report: DNNs", "0.34-0.43"),
    ("published single network (SOTA)", "~0.73"),
    ("published ensembles", "~0.75-0.77"),
    ("PyPI `fer` package", "0.58"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run ids")
    parser.add_argument("--data", required=True, help="a labelled data set, e.g. the FER2013 CSV")
    parser.add_argument("--split", default="PublicTest")
    parser.add_argument("--runs-dir", default=None, help="run store (default: $FERLAB_RUNS or ./runs)")
    args = parser.parse_args()
    store = RunStore(args.runs_dir)
    data = load_dataset(args.data)
    columns = [args.split, *(f"+ {TTA_TITLES[mode]} TTA" for mode in TTA_MODES[1:])]
    print(f"| run | rule | params | {' | '.join(columns)} |")
    print("|---|---|---:|" + "---:|" * len(columns))
    for run_id in args.runs:
        run = store.get(run_id)
        if run is None:
            print(f"error: no finished run '{run_id}'", file=sys.stderr)
            return 2
        reports = [evaluate(run, data, split=args.split, tta=mode) for mode in TTA_MODES]
        params = run.metrics["params"]["trainable"]
        for rule in reports[0]:
            cells = " | ".join(f"{report[rule]['accuracy']:.4f}" for report in reports)
            print(f"| {run.label} | {rule} | {params:,} | {cells} |", flush=True)
    for name, figure in REFERENCE:
        print(f"| {name} | | | {figure} |" + " |" * (len(columns) - 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
