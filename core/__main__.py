"""``python -m core train|ensemble|combine|evaluate|predict|snapshot|carry|pack|list|delete`` -- the CLI.

Bad arguments or bad data exit non-zero with one line naming the problem,
never a traceback: users of this tool are students, not debuggers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with stderr muted: its C++ start-up lines (oneDNN, CUDA
    probing) ignore TF_CPP_MIN_LOG_LEVEL and would bury our one-line messages.
    Not under another Keras backend (``KERAS_BACKEND=jax`` trains where there is
    no TensorFlow: ``core.training``)."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _common(parser: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        parser.add_argument("--data", default="demo", help="'demo' (built-in set, default), a FER2013 CSV, a homework folder or an image tree")
    parser.add_argument("--runs", default=None, help="run store folder (default: $FERLAB_RUNS or ./runs)")


def _train_options(parser: argparse.ArgumentParser) -> None:
    from core.models import DEFAULT_CNN, PRESETS, Augment

    parser.add_argument("--compute", choices=("float32", "bf16"),
                        help="compute this call's epochs in this precision, whatever --bf16 says; --bf16 stays part of "
                             "the run (its id): to go on with a --bf16 run on a CPU without native bfloat16, add "
                             "--compute float32. history.csv's 'compute' column records each epoch's")
    parser.add_argument("--model", default="cnn", help=f"cnn (= {DEFAULT_CNN}), dnn, or a preset: {', '.join(PRESETS)}")
    parser.add_argument("--match", default=DEFAULT_CNN, help="for --model dnn: the CNN whose trainable-parameter count it matches")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="for adamw and sgd")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up epochs (cosine schedule)")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--early-stopping", type=int, default=0, help="patience in epochs (0: off)")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-augment", action="store_true", help="no training-time augmentation")
    parser.add_argument("--no-normalize", action="store_true", help="feed raw 0..255 grey levels")
    parser.add_argument("--erasing", type=float, default=0.0, help="random-erasing probability")
    parser.add_argument("--shift", type=float, default=Augment.shift, help="random shift, a fraction of the face (0: off)")
    parser.add_argument("--zoom", type=float, default=Augment.zoom, help="random zoom in or out, a fraction (0: off)")
    parser.add_argument("--rotation", type=float, default=Augment.rotation_deg, help="random rotation, degrees (0: off)")
    parser.add_argument("--shear", type=float, default=Augment.shear, help="random shear, a fraction (0: off)")
    parser.add_argument("--interpolation", choices=("bilinear", "nearest"), default=Augment.interpolation,
                        help="how rotation, zoom, shift and shear resample a face (nearest: far cheaper under JAX)")
    parser.add_argument("--init-from", metavar="RUN_ID",
                        help="start from the weights of this finished run of the same model (fine-tuning), "
                             "or of an unfinished run's checkpoint: RUN_ID@EPOCH")
    parser.add_argument("--teacher", metavar="RUN_ID",
                        help="distil this finished run (an ensemble, usually): its probabilities join the targets")
    parser.add_argument("--distill-weight", type=float, default=0.5,
                        help="with --teacher: the teacher's share of each target, 0..1 (the rest is the label)")
    parser.add_argument("--bf16", action="store_true", help="mixed_bfloat16 compute: faster on CPUs with AMX/AVX-512 BF16 and GPUs, several times slower on other CPUs (a warning says so)")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                        help="tf.distribute: mirrored = all local GPUs, multiworker = machines from TF_CONFIG "
                             "(each runs the same command; the chief's run is the result, the other workers "
                             "write theirs into RUNS/.worker-N)")


def _tta_option(parser: argparse.ArgumentParser) -> None:
    from core.evaluation import TTA_MODES

    parser.add_argument("--tta", nargs="?", const="flip", default="none", choices=TTA_MODES,
                        help="test-time augmentation: average with the mirrored face (--tta = flip), "
                             "with mirrored and shifted copies (--tta shifts), or with mirrored, turned and "
                             "zoomed copies (--tta rotate-zoom: the best on validation)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="FER Lab: train, evaluate and use facial-expression models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model (or return the stored run for the same config and data)")
    _common(p)
    _train_options(p)

    p = sub.add_parser("ensemble", help="bagging: N models on bootstrap resamples (or, --no-resample, on all faces), combined three ways")
    _common(p)
    _train_options(p)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--no-resample", action="store_true",
                   help="every member trains on all training faces; members differ by seed only (a deep ensemble)")
    p.add_argument("--member", type=int, metavar="K",
                   help="train only member K (0-based) and stop: members can train in turn, on other machines "
                        "or sessions; the full command then combines them")

    p = sub.add_parser("combine", help="an ensemble of finished runs of any architectures (same data and validation split)")
    p.add_argument("run", nargs="+", metavar="RUN", help="finished single runs (python -m core list shows them)")
    p.add_argument("--select", action="store_true",
                   help="the RUNs are candidates: keep those that greedy forward selection on validation accuracy "
                        "picks (start from the best run, add the one that raises the average's accuracy most, "
                        "stop when none does)")
    from core.evaluation import TTA_MODES

    p.add_argument("--tta", default="none", choices=TTA_MODES,
                   help="with --select: choose on validation predictions under this test-time augmentation "
                        "(the candidates predict their validation faces again: needs --data)")
    p.add_argument("--data", help="with --select --tta: the data set the runs were trained on (a FER2013 CSV, ...)")
    _common(p, data=False)

    p = sub.add_parser("evaluate", help="accuracy and per-class metrics of a run on a labelled split")
    _common(p)
    p.add_argument("run", help="run id (or unique prefix)")
    p.add_argument("--split", default="PublicTest",
                   help="a split of --data (PublicTest, PrivateTest, ...), or validation: the run's own "
                        "held-out validation faces, those its stored validation accuracy is on")
    _tta_option(p)

    p = sub.add_parser("predict", help="the 7 emotion probabilities for a face image")
    _common(p, data=False)
    p.add_argument("run")
    p.add_argument("image", help="a face image (png, jpg, ...): centre-cropped, grey, 48x48")
    _tta_option(p)

    p = sub.add_parser("snapshot", help="a finished run from the best checkpoint so far of an unfinished training")
    _common(p)
    p.add_argument("workdir", help="the unfinished run's folder (it is left as it is and can still be resumed)")

    p = sub.add_parser("carry", help="an unfinished training made small enough to commit: weights (float16 kernels), config, history")
    p.add_argument("workdir", help="the unfinished run's folder (left as it is)")
    p.add_argument("dest", help="folder to write <run id>/ into; copy that into a run store and the same train command resumes")

    p = sub.add_parser("pack", help="store a finished run's kernels as float16 (half the bytes) or int8 (a quarter), measuring what it costs")
    _common(p)
    p.add_argument("--int8", action="store_true", help="int8 kernels, one scale per output channel (default: float16)")
    p.add_argument("run", help="run id (or unique prefix); an ensemble packs its members")

    p = sub.add_parser("list", help="finished runs")
    _common(p, data=False)

    p = sub.add_parser("delete", help="delete a run")
    _common(p, data=False)
    p.add_argument("run")
    return parser


def config_from_args(args: argparse.Namespace):
    from core.models import DEFAULT_CNN, Augment, ModelSpec
    from core.training import TrainConfig

    arch = DEFAULT_CNN if args.model == "cnn" else args.model
    augment = None if args.no_augment else Augment(
        rotation_deg=args.rotation, zoom=args.zoom, shift=args.shift, shear=args.shear, erasing=args.erasing,
        interpolation=args.interpolation,
    )
    spec = ModelSpec(arch=arch, augment=augment, normalize=not args.no_normalize, dnn_match=args.match)
    return TrainConfig(
        model=spec,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_epochs=args.warmup,
        label_smoothing=args.label_smoothing,
        early_stopping=args.early_stopping,
        val_fraction=args.val_fraction,
        seed=args.seed,
        mixed_precision=args.bf16,
        init_from=args.init_from,
        teacher=args.teacher,
        distill_weight=args.distill_weight,
        resample=not getattr(args, "no_resample", False),  # an ensemble option; train has none
    )


def _validate(config) -> None:
    from core.models import PRESETS

    if config.model.arch not in PRESETS and config.model.arch != "dnn":
        raise ValueError(f"--model: unknown model '{config.model.arch}' (cnn, dnn or one of {', '.join(PRESETS)})")
    if config.model.dnn_match not in PRESETS:
        raise ValueError(f"--match: unknown CNN '{config.model.dnn_match}'")
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be at least 1")
    if not 0 < config.val_fraction < 1:
        raise ValueError("--val-fraction must be between 0 and 1")
    if not 0 <= config.distill_weight <= 1:
        raise ValueError("--distill-weight must be between 0 and 1")


def _compute_policy(args: argparse.Namespace) -> str | None:
    """The Keras dtype policy ``--compute`` asks for; None: the run's own (--bf16)."""
    return {"float32": "float32", "bf16": "mixed_bfloat16", None: None}[getattr(args, "compute", None)]


def _warn_if_bf16_is_emulated(config, policy: str | None) -> None:
    """--bf16 keeps its meaning (it is part of the run id), but a user about to
    train for hours should know when it will be the slower choice."""
    from core.training import POLICIES, native_bfloat16

    if (policy or POLICIES[config.mixed_precision]) == "mixed_bfloat16" and native_bfloat16() is False:
        sys.stderr.write(
            "warning: bfloat16 on a CPU without native bfloat16 (no avx512_bf16 or amx_bf16 in /proc/cpuinfo): "
            "TensorFlow emulates it, and training runs several times slower than in float32 "
            "(compare: python bench/train_throughput.py; a --bf16 run can go on in float32 with --compute float32)\n"
        )


def _warn_if_not_held_out(run, data, split: str) -> None:
    """An accuracy is only what its metrics.json means on faces the run never
    learnt from: say so when the data set is not the one it was trained on (a
    subset, another CSV) or the split is the one it was trained on."""
    from core.data import canonical_split

    fingerprint = data.fingerprint()
    if (problem := run.other_data(fingerprint)) is not None:
        sys.stderr.write(
            f"warning: {problem}, not on {data.source} ({fingerprint}): these faces may include ones it learnt from, "
            "so the figures are not comparable with its metrics.json\n"
        )
    elif canonical_split(split) == "Training":
        sys.stderr.write(f"warning: {run.id} learnt from the Training faces (all but its validation tenth): "
                         "this accuracy is not held-out\n")


def _strategy(name: str):
    if name == "default":
        return None
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def runs_for_worker(runs: Path, strategy: str, tf_config: str | None) -> Path:
    """The folder this process keeps its runs in.

    Every MultiWorkerMirroredStrategy worker runs the same command and writes
    the same checkpoints; were they all to write into ``--runs`` (a shared
    disk), the others would overwrite the chief's files or wait on its lock.
    So only the chief (task type ``chief``, else worker 0) writes there and
    each other worker writes below it, in ``.worker-<index>``, a folder that
    lists and views leave out.
    """
    if strategy != "multiworker" or not tf_config:
        return runs
    config = json.loads(tf_config)
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = "chief" in config.get("cluster", {})
    is_chief = kind == "chief" or (not has_chief and kind == "worker" and index == 0)
    return runs if is_chief else runs / f".{kind}-{index}"


class ProgressBar:
    """One line per epoch on stderr, redrawn in place while batches run."""

    def __call__(self, tick) -> None:
        width = 30
        done = int(width * tick.batch / max(tick.batches, 1))
        logs = "  ".join(f"{k} {v:.4f}" for k, v in tick.logs.items())
        end = "\n" if tick.batch == tick.batches and "val_accuracy" in tick.logs else ""
        sys.stderr.write(f"\repoch {tick.epoch + 1}/{tick.epochs} [{'=' * done}{' ' * (width - done)}] {logs}{end}")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from core.data import load_dataset
    from core.runs import RunStore

    if args.command == "carry":
        from core.training import carry

        print(carry(Path(args.workdir), Path(args.dest)))
        return 0
    strategy_name = getattr(args, "strategy", "default")
    store = RunStore(runs_for_worker(RunStore(args.runs).root, strategy_name, os.environ.get("TF_CONFIG")))
    if args.command in ("train", "ensemble"):
        config = config_from_args(args)
        _validate(config)
        policy = _compute_policy(args)
        _warn_if_bf16_is_emulated(config, policy)
        strategy = _strategy(strategy_name)
        data = load_dataset(args.data)
        how = {"progress": ProgressBar(), "strategy": strategy, "policy": policy}
        if args.command == "train":
            result = store.train(config, data, **how)
        elif args.member is not None:
            result = store.train_member(config, args.members, args.member, data, **how)
        else:
            result = store.ensemble(config, args.members, data, **how)
        _print_summary(result)
        print(result.path)
        return 0
    if args.command == "snapshot":
        result = store.snapshot(Path(args.workdir), load_dataset(args.data))
        _print_summary(result)
        print(result.path)
        return 0
    if args.command == "combine":
        data = load_dataset(args.data) if args.data else None
        result = store.combine(args.run, select=args.select, tta=args.tta, data=data)
        _print_summary(result)
        print(result.path)
        return 0
    if args.command == "list":
        for r in store.list():
            m = r.metrics
            test = m.get("test", {}).get("accuracy")
            print(f"{r.id}\t{r.label}\tval {m['val']['accuracy']:.4f}" + (f"\ttest {test:.4f}" if test is not None else ""))
        return 0
    found = store.get(args.run)
    if found is None:
        raise ValueError(f"no finished run '{args.run}' in {store.root} (see: python -m core list)")
    if args.command == "evaluate":
        from core.runs import evaluate

        data = load_dataset(args.data)
        report = evaluate(found, data, split=args.split, tta=args.tta)
        _warn_if_not_held_out(found, data, args.split)
        for rule, m in report.items():
            print(f"{rule}\taccuracy {m['accuracy']:.4f}\tmacro-F1 {m['macro_f1']:.4f}\tn {m['n']}")
        return 0
    if args.command == "predict":
        return _predict(found, Path(args.image), args.tta)
    if args.command == "pack":
        kernels = "int8" if args.int8 else "float16"
        packed = store.pack(found.id, load_dataset(args.data), kernels)
        after = packed.metrics
        for key, was in after.get("float32", {}).items():
            print(f"{key}\taccuracy float32 {was:.4f} -> {kernels} {after[key]['accuracy']:.4f}")
        print(packed.path)
        return 0
    if args.command == "delete":
        store.delete(found.id)
        print(f"deleted {found.id}")
        return 0
    raise AssertionError(args.command)


def _predict(found, image_path: Path, tta: str) -> int:
    import numpy as np

    from core.data import EMOTIONS, read_image, to_face48
    from core.evaluation import predict_probs

    if not image_path.exists():
        raise ValueError(f"{image_path}: no such file")
    face = to_face48(read_image(image_path))
    probs = predict_probs(found.model(), face[None], tta=tta)[0]
    for name, p in zip(EMOTIONS, probs):
        print(f"{name}\t{p:.4f}")
    print(f"prediction\t{EMOTIONS[int(np.argmax(probs))]}")
    return 0


def _print_summary(result) -> None:
    m = result.metrics
    line = f"{result.label}: val accuracy {m['val']['accuracy']:.4f}"
    if "test" in m:
        line += f", {m['data']['test_split']} accuracy {m['test']['accuracy']:.4f}"
    sys.stderr.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    _import_tensorflow_quietly()
    args = build_parser().parse_args(argv)
    from core.data import DataError

    try:
        return run(args)
    except (DataError, ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last finished epoch", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
