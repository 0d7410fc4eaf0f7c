"""Which explanation method to trust? Every method ranked on the demo set and on FER2013.

    python bench/trust.py [--faces 100] [--sanity-faces 5] [--data ../shared/fer2013/fer2013.csv.gz] [--methods M ...]

For each data set, the default shipped CNN explains its own prediction on
``--faces`` held-out (PublicTest) faces, drawn at random with a fixed seed,
and ``core.explain.compare.compare_methods`` scores every method: the
faithfulness gain of its deletion and insertion curves over random pixel
orders, the cascading-randomisation sanity check (on the first
``--sanity-faces`` faces), ground-truth mass and pointing game (the demo set
only: FER2013 has no masks) and the seconds each takes per face on this
machine. The tables print in Markdown, ready for the README. FER2013 is
skipped when the CSV is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from core.data import load_dataset  # noqa: E402
from core.explain.compare import compare_methods, held_out_sample  # noqa: E402
from core.runs import REPORT_SPLIT, Run  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "fer2013" / "fer2013.csv.gz"
METHODS = ("saliency", "smoothgrad", "integrated", "gradcam", "gradcampp", "occlusion", "lime")
MODELS = {"demo": ROOT / "models" / "demo" / "tiny-a4e6614394", "fer2013": ROOT / "models" / "fer" / "ferlab-5f9c8a749f"}


def markdown(table: pd.DataFrame) -> str:
    """The comparison table as README Markdown: best faithfulness first."""
    has_truth = table["mass_ratio"].notna().any()
    head = "| method | faithfulness gain | deletion AUC (random) | insertion AUC (random) | sanity: final Spearman | sanity passed"
    head += " | GT mass ratio | pointing (random) |" if has_truth else " |"
    head += " map ms/face | curves s/face | sanity s/face |"
    lines = [head, "|" + "---|" + "---:|" * (head.count("|") - 2)]
    for row in table.itertuples():
        if pd.isna(row.gain):
            lines.append(f"| {row.title} | {row.note} |")
            continue
        cells = [
            row.title,
            f"{row.gain:+.3f} ± {row.gain_sem:.3f}",
            f"{row.deletion_auc:.3f} ({row.random_deletion_auc:.3f})",
            f"{row.insertion_auc:.3f} ({row.random_insertion_auc:.3f})",
            f"{row.sanity_spearman:.2f}",
            f"{row.sanity_pass:.0%}",
        ]
        if has_truth:
            cells += [f"{row.mass_ratio:.2f}", f"{row.pointing:.0%} ({row.pointing_random:.0%})"]
        cells += [f"{row.explain_s * 1000:.0f}", f"{row.faithfulness_s:.2f}", f"{row.sanity_s:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench(name: str, source: str | Path, n: int, sanity_faces: int, lime_samples: int, seed: int,
          methods: tuple[str, ...] = METHODS) -> None:
    run = Run(MODELS[name])
    sample = held_out_sample(load_dataset(source), n, seed)
    faces = sample.images
    model = run.model()
    start = time.perf_counter()  # the targets: each face's own prediction, as the Explain view defaults
    knobs = {key: {} for key in methods} | ({"lime": {"n_samples": lime_samples}} if "lime" in methods else {})
    table = compare_methods(model, faces, None, knobs,
                            masks=sample.masks, sanity_faces=sanity_faces)
    print(f"\n### {name}: {run.id} on {len(faces)} {REPORT_SPLIT} faces ({time.perf_counter() - start:.0f} s in all)\n")
    print(markdown(table), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=100)
    parser.add_argument("--sanity-faces", type=int, default=5)
    parser.add_argument("--lime-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the FER2013 CSV (skipped when absent)")
    parser.add_argument("--only", choices=tuple(MODELS), help="one data set only")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS,
                        help="the methods to score (a row again after a method changed); default all")
    args = parser.parse_args(argv)
    sets = {"demo": "demo", "fer2013": args.data}
    for name, source in sets.items():
        if args.only not in (None, name):
            continue
        if name == "fer2013" and not Path(source).exists():
            print(f"\n(FER2013 skipped: {source} not found)")
            continue
        bench(name, source, args.faces, args.sanity_faces, args.lime_samples, args.seed, tuple(args.methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
