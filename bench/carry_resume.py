"""What resuming a carried run costs against resuming from its full checkpoint.

``python -m core carry`` keeps an unfinished run's weights (float16 kernels) but
not its optimiser state, so a resumed run starts a new AdamW at the step where
the run stopped. This trains the same batches for ``--steps`` steps from

* ``last.keras``: weights and AdamW moments (what this machine resumes from),
* the carried weights with moments estimated from 50 batches (what ``fit`` does),
* the carried weights with zero moments (what a new optimiser alone would do),

and prints validation loss and accuracy before and after, and how far each
variant's weights moved (RMS of the change, as a ratio to ``last.keras``'s).
It can run beside the training; the first and last rows' "before" columns are
then equal only if no epoch ended between the carry and loading ``last.keras``.

    python bench/carry_resume.py --data ../shared/fer2013/fer2013.csv.gz ~/fer-runs/store/RUN
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from core.data import load_dataset  # noqa: E402
from core.runs import Run  # noqa: E402
from core.training import (  # noqa: E402
    CARRIED_WEIGHTS,
    build_compiled,
    carry,
    make_dataset,
    read_history,
    resume_carried,
    steps_per_epoch,
    training_split,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="an unfinished run's folder with last.keras")
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    config = Run(args.workdir).train_config()
    data = load_dataset(args.data)
    train, val = training_split(data, config)
    order = np.random.default_rng(0).permutation(len(train))  # one fixed order: the same batches for every variant
    batches = make_dataset(train.images[order], train.labels[order], config.batch_size, shuffle=False)
    estimation = make_dataset(train.images, train.labels, config.batch_size, shuffle=True, seed=1)
    tmp = tempfile.TemporaryDirectory()
    carried_dir = carry(args.workdir, Path(tmp.name))
    carried_weights, done = carried_dir / CARRIED_WEIGHTS, len(read_history(carried_dir))

    def carried(estimate: bool) -> keras.Model:
        model = build_compiled(config, train)
        resume_carried(model, carried_weights, estimation, done * steps_per_epoch(config, train), estimate)
        return model

    variants = {
        "last.keras (AdamW state)": lambda: keras.models.load_model(args.workdir / "last.keras", safe_mode=True),
        "carried, moments estimated": lambda: carried(True),
        "carried, zero moments": lambda: carried(False),
    }
    moved: dict[str, float] = {}
    print(f"{args.workdir.name}: {done} epochs done; {args.steps} steps from each start, same batches")
    print("| start | val loss before | val acc before | val loss after | val acc after | weight change vs last.keras |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, make in variants.items():
        model = make()
        before = model.evaluate(val.images, keras.utils.to_categorical(val.labels, 7), batch_size=512, verbose=0)
        start = [w.copy() for w in model.get_weights()]
        keras.utils.set_random_seed(0)  # same augmentation draws for every variant
        model.fit(batches.take(args.steps), epochs=1, shuffle=False, verbose=0)
        after = model.evaluate(val.images, keras.utils.to_categorical(val.labels, 7), batch_size=512, verbose=0)
        kernels = [(a - b) for a, b in zip(model.get_weights(), start) if a.ndim >= 2]
        moved[name] = float(np.sqrt(np.mean(np.concatenate([k.ravel() ** 2 for k in kernels]))))
        ratio = moved[name] / next(iter(moved.values()))
        print(f"| {name} | {before[0]:.4f} | {before[1]:.4f} | {after[0]:.4f} | {after[1]:.4f} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
