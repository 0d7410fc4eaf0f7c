"""Training: input pipeline, optimiser and schedule, per-epoch checkpoints, resume.

``fit`` trains one model in a work folder and can be killed at any moment
(Ctrl-C, SIGKILL): every finished epoch leaves ``last.keras`` (weights *and*
optimiser state), ``best.keras`` and ``history.csv``, each written to a temp
file and renamed, so calling ``fit`` again resumes from the last finished
epoch instead of starting over or reading a half-written file.

``carry`` makes such a folder small enough to commit (weights only, float16
kernels), so a long CPU training can go on from another machine.

TensorFlow is the backend users run (the dashboard's explainers need it), but
training also runs under Keras' JAX or PyTorch backend (``KERAS_BACKEND=jax``),
where TensorFlow need not be installed: GPU machines often carry only those.
The run it makes is the same kind of run folder, readable by the dashboard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd

from core.data import FaceDataset, stratified_split
from core.evaluation import predict_probs
from core.models import N_CLASSES, ModelSpec, build_model, drop_later_defaults, inference_model, input_stats
from core.packing import read_packed, save_packed

CARRIED_WEIGHTS = "last.f16.npz"  # a carried run's last epoch, without optimiser state (``carry``)
CARRIED_BEST = "best.f16.npz"  # a carried run's best epoch so far, when it is not the last (``carry``)
BEST_EPOCH = "best.json"  # {"epoch": N, "sha256": of best.keras}: the epoch whose weights it holds (``best_epoch``)
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds", "compute"]
POLICIES = {False: "float32", True: "mixed_bfloat16"}  # TrainConfig.mixed_precision -> Keras dtype policy


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training's result (and so its run id)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw | sgd (Nesterov momentum 0.9)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4  # adamw and sgd only
    schedule: str = "constant"  # constant | cosine (decays to 0 at the last epoch)
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    early_stopping: int = 0  # patience in epochs on val_accuracy; 0 = off
    val_fraction: float = 0.1
    seed: int = 0
    bootstrap: int | None = None  # ensemble member's index: seeds its bootstrap resample (or, with resample off, its init)
    resample: bool = True  # ensemble members train on bootstrap resamples (bagging); False: all on every training face
    mixed_precision: bool = False  # mixed_bfloat16 compute, float32 weights
    train_split: str = "Training"
    init_from: str | None = None  # id of a finished run of the same model whose weights training starts from
    teacher: str | None = None  # id of a finished run (an ensemble, usually) to distil: its probabilities join the targets
    distill_weight: float = 0.5  # share of the teacher's probabilities in each target (the rest: the one-hot label)

    def to_dict(self) -> dict:
        """The config as stored and hashed into the run id."""
        d = drop_later_defaults({**asdict(self), "model": self.model.to_dict()},
                                {"init_from": None, "teacher": None, "resample": True})
        if self.teacher is None:
            del d["distill_weight"]  # means nothing without a teacher
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{**d, "model": ModelSpec.from_dict(d["model"])})


@dataclass(frozen=True)
class Progress:
    """One tick for a progress bar: the CLI and the dashboard read the same thing."""

    epoch: int  # 0-based epoch in progress
    epochs: int
    batch: int  # batches done in this epoch
    batches: int
    logs: dict


ProgressFn = Callable[[Progress], None]


# ----------------------------------------------------------------------- data


def training_split(data: FaceDataset, config: TrainConfig) -> tuple[FaceDataset, FaceDataset]:
    """(train, validation) from the training split: stratified, seeded; a bagging
    member then resamples its train part with replacement (same validation set
    for every member, so the ensemble rules can be compared on it)."""
    pool = data.split(config.train_split)
    pool = pool.subset(pool.labelled)
    train_idx, val_idx = stratified_split(pool.labels, config.val_fraction, config.seed, source=data.source)
    if config.bootstrap is not None and config.resample:
        rng = np.random.default_rng(config.bootstrap)
        train_idx = rng.choice(train_idx, size=len(train_idx), replace=True)
    return pool.subset(train_idx), pool.subset(val_idx)


def stream_seed(seed: int, epochs_done: int) -> int:
    """Seed of a training's random streams (batch order, augmentation draws) from
    epoch ``epochs_done + 1`` on. A resumed run re-seeds, and with the run's own
    seed its first epoch would replay epoch 1's batch order (and, in a carried
    run, whose layers are built anew, epoch 1's augmentation draws): a long run
    resumed in every session would see those batches again each time. A fresh
    run (0 done) keeps the run's seed, so its results stay reproducible."""
    return seed + epochs_done


def _tensorflow_backend() -> bool:
    return keras.backend.backend() == "tensorflow"


def make_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0):
    """uint8 faces in memory -> batches of ((B, 48, 48, 1) float32, (B, 7) targets).

    ``labels``: (N,) class indices, made one-hot, or (N, 7) soft targets (distillation)
    used as they are. Augmentation is not here: it is a layer inside the model (so
    the saved model carries it and it runs vectorised on whole batches).
    A ``tf.data.Dataset`` under TensorFlow; a ``Batches`` under the other backends.
    """
    if not _tensorflow_backend():
        return Batches(images, labels, batch_size, shuffle, seed)
    import tensorflow as tf

    soft = labels.ndim == 2
    targets = labels.astype(np.float32) if soft else labels.astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((images[..., None], targets))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y if soft else tf.one_hot(y, N_CLASSES)),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class Batches(keras.utils.PyDataset):
    """``make_dataset``'s batches without TensorFlow, for Keras' JAX and PyTorch
    backends: the same arrays, reshuffled after every epoch by a seeded generator
    (another batch order than tf.data's for the same seed)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool, seed: int):
        super().__init__()
        self.images, self.batch_size, self.shuffle = images, batch_size, shuffle
        self.targets = labels.astype(np.float32) if labels.ndim == 2 else np.eye(N_CLASSES, dtype=np.float32)[labels]
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(images)) if shuffle else np.arange(len(images))

    def __len__(self) -> int:
        return int(np.ceil(len(self.images) / self.batch_size))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.images[rows, ..., None].astype(np.float32), self.targets[rows]  # (B, 48, 48, 1), (B, 7)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.images))


def distill_targets(labels: np.ndarray, teacher_probs: np.ndarray, weight: float) -> np.ndarray:
    """(N,) labels and the teacher's (N, 7) probabilities -> (N, 7) soft targets.

    Why a mixture: the teacher's probabilities carry what the one-hot label cannot
    (this Fear face looks half Surprise), which is where a distilled single net gains
    on one trained from labels alone; the label's share keeps the teacher's
    mistakes from being learnt as they are (Hinton et al. 2015, at temperature 1).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill_weight must be between 0 and 1, not {weight}")
    one_hot = np.eye(N_CLASSES, dtype=np.float32)[labels]
    return (1.0 - weight) * one_hot + weight * teacher_probs.astype(np.float32)


# ------------------------------------------------------------------ optimiser


def _learning_rate(config: TrainConfig, steps_per_epoch: int):
    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule == "cosine":
        warmup = config.warmup_epochs * steps_per_epoch
        total = max(config.epochs * steps_per_epoch - warmup, 1)
        if warmup:
            return keras.optimizers.schedules.CosineDecay(
                config.learning_rate / 10, total, warmup_target=config.learning_rate, warmup_steps=warmup
            )
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total)
    raise ValueError(f"unknown schedule '{config.schedule}' (constant or cosine)")


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = _learning_rate(config, steps_per_epoch)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer '{config.optimizer}' (adam, adamw or sgd)")


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    lr = optimizer.learning_rate
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)


def steps_per_epoch(config: TrainConfig, train: FaceDataset) -> int:
    return int(np.ceil(len(train) / config.batch_size))


def build_compiled(
    config: TrainConfig, train: FaceDataset, policy: str | None = None, stats: tuple[float, float] | None = None
) -> keras.Model:
    """``policy``: the Keras dtype policy to compute in; None: the one ``config`` names.
    ``stats``: the normaliser's (mean, std); None: the training faces'. Weights
    from elsewhere (a start run, a carried run) bring theirs: their first layer
    was trained on inputs scaled by those, not by this data's."""
    policy = policy or POLICIES[config.mixed_precision]
    mean, std = stats or (float(train.images.mean()), float(train.images.std()) or 1.0)
    model = build_model(config.model, mean=mean, std=std, policy=policy)
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch(config, train)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """``target`` takes ``source``'s weights; both are builds of one preset (augmentation layers hold none)."""
    ours, theirs = target.get_weights(), source.get_weights()
    if [w.shape for w in ours] != [w.shape for w in theirs]:
        raise ValueError(f"cannot start '{target.name}' from the weights of '{source.name}': the layers differ")
    target.set_weights(theirs)


def compute_policy(model: keras.Model) -> str:
    """The dtype policy a model's hidden layers compute in (its normaliser and logits are always float32)."""
    hidden = [layer for layer in model.layers if layer.trainable_weights and layer.name not in ("normalize", "logits")]
    return hidden[0].dtype_policy.name


def with_policy(model: keras.Model, config: TrainConfig, train: FaceDataset, policy: str) -> keras.Model:
    """``model`` (compiled, its optimiser built) rebuilt to compute in ``policy``,
    with its weights and its optimiser's state (step count, moments).

    Why: the weights are float32 under either policy, so a run can go on in another
    precision exactly where it stopped, e.g. a bfloat16 run on a CPU that would
    only emulate bfloat16."""
    rebuilt = build_compiled(config, train, policy, stats=input_stats(model))
    copy_weights(model, rebuilt)
    rebuilt.optimizer.build(rebuilt.trainable_variables)
    ours, theirs = rebuilt.optimizer.variables, model.optimizer.variables
    if [v.shape for v in ours] != [v.shape for v in theirs]:
        raise ValueError(f"cannot move the optimiser state of '{model.name}' to {policy}: its variables differ")
    for mine, saved in zip(ours, theirs):
        mine.assign(saved)
    return rebuilt


def estimate_moments(model: keras.Model, dataset, batches: int) -> None:
    """Give a compiled model's fresh Adam(W) the moments a long run would have:
    the mean gradient and mean squared gradient over ``batches`` training batches.

    Why: a run resumed from carried weights has a new optimiser whose iteration
    count is set to where the run stopped (so the schedule goes on), which also
    switches off Adam's bias correction for zero moments: its first few hundred
    steps would be up to 6x too long. Plain means are unbiased estimates, so the
    run takes steps of the right size at once. SGD's momentum is left at zero,
    which only shortens the first steps.
    """
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    if not isinstance(optimizer, keras.optimizers.Adam):  # AdamW is an Adam
        return
    if not _tensorflow_backend():
        raise ValueError("a carried run resumes under the TensorFlow backend only (unset KERAS_BACKEND)")
    import tensorflow as tf

    sums = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
    squares = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
    n = 0
    for images, targets in dataset.take(batches):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=images, y=targets, y_pred=model(images, training=True))
        for s, q, g in zip(sums, squares, tape.gradient(loss, model.trainable_variables)):
            g = np.asarray(g, np.float64)
            s += g
            q += g * g
        n += 1
    # Keras' Adam keeps one momentum and one velocity per trainable variable, in their order.
    for m, v, s, q in zip(optimizer._momentums, optimizer._velocities, sums, squares):
        m.assign((s / n).astype(np.float32))
        v.assign((q / n).astype(np.float32))


def resume_carried(model: keras.Model, path: Path, dataset, step: int, estimate: bool = True) -> None:
    """A freshly compiled model takes the weights ``carry`` stored at ``path`` and
    its optimiser goes to ``step``, so the schedule goes on where the run stopped;
    its moments come from ``estimate_moments`` (``estimate=False``: zeros, which
    ``bench/carry_resume.py`` measures against)."""
    model.set_weights(read_packed(path)[2])
    if estimate:
        estimate_moments(model, dataset, batches=50)
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(step)


# ---------------------------------------------------------------- checkpoints


def save_atomic(model: keras.Model, path: Path) -> None:
    """model.save to a temp file, then rename: a kill never leaves half a file."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _last_epoch(workdir: Path) -> tuple[pd.DataFrame, keras.Model]:
    """``last.keras`` and the history it belongs to, also while the training runs.

    An epoch's end replaces ``last.keras``, then ``history.csv``; if either
    changed while they were read (a new checkpoint, a longer history), read again.
    """
    last = workdir / "last.keras"
    for _ in range(10):
        history = read_history(workdir)
        if not len(history) or not last.exists():
            raise ValueError(f"{workdir}: no finished epoch to carry")
        stamp = last.stat().st_mtime_ns
        model = keras.models.load_model(last, safe_mode=True)
        if last.stat().st_mtime_ns == stamp and len(read_history(workdir)) == len(history):
            return history, model
    raise ValueError(f"{workdir}: the checkpoint kept changing while it was read")


def best_epoch(workdir: Path, history: pd.DataFrame) -> int | None:
    """The epoch whose weights ``best.keras`` holds; None without one.

    ``best.json`` names it: a run carried to another machine arrives without its
    ``best.keras``, so from then on its best checkpoint ranks only the epochs
    trained since, and the best validation epoch of its history may be one
    whose weights are gone. A ``best.keras`` without ``best.json`` is from
    before it was written and ranked every epoch of its history.
    """
    best = workdir / "best.keras"
    if not best.exists():
        return None
    named = workdir / BEST_EPOCH
    if not named.exists():
        return int(history["val_accuracy"].idxmax()) + 1
    record = json.loads(named.read_text())
    if "sha256" in record and record["sha256"] != file_digest(best):
        # Killed between the two writes: best.keras holds the epoch after the last history row (history.csv is
        # written last), which the resumed training redoes and then ranks as best, as after any unrecorded epoch.
        return len(history) + 1
    return int(record["epoch"])


def file_digest(path: Path) -> str:
    """sha256 of a file: ties ``best.json`` to the ``best.keras`` it describes (written one after the other)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def carry(workdir: Path, dest_root: Path) -> Path:
    """An unfinished training's folder made small enough for git: ``dest_root/<run id>``.

    ``last.keras`` also holds the AdamW moments, twice the weights again
    (``ferlab-wide``'s is 56 MB), too much to commit at every stop. The carried
    folder keeps ``config.json``, ``history.csv`` and the last epoch's weights
    with float16 kernels (``ferlab-wide``: 9 MB); copied into a run store, the
    same ``train`` command resumes from it (``fit``). The best epoch so far goes
    too (``best.json``, and its weights when it is not the last epoch): without
    it, a run moved to a new machine could only pick its final model from the
    epochs trained there. Built in a temp folder and renamed, so an older carry
    of the run is replaced whole or not at all.
    """
    workdir, dest_root = Path(workdir), Path(dest_root)
    dest, tmp, old = (dest_root / name for name in (workdir.name, f".{workdir.name}.tmp", f".{workdir.name}.old"))
    if dest.resolve() == workdir.resolve():
        raise ValueError(f"{workdir}: carrying a run into its own folder would replace its checkpoints; name another folder")
    history, model = _last_epoch(workdir)
    dest_root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_packed(model, tmp / CARRIED_WEIGHTS, "float16")
    best = _best_so_far(workdir, history)
    if best is not None:
        epoch, weights = best
        if weights is not None:
            save_packed(weights, tmp / CARRIED_BEST, "float16")
        write_text_atomic(tmp / BEST_EPOCH, json.dumps({"epoch": epoch}))
    shutil.copy2(workdir / "config.json", tmp / "config.json")
    write_text_atomic(tmp / "history.csv", history.to_csv(index=False))
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _best_so_far(workdir: Path, history: pd.DataFrame) -> tuple[int, keras.Model | None] | None:
    """(epoch, its model) of ``best.keras`` for ``carry``; the model is None when the
    epoch is the last one of ``history`` (the carried last weights are it). None when
    there is no best epoch within ``history``, or ``best.keras`` changed while read
    (the training went on): the resumed run then ranks the epochs after it, as before."""
    best = workdir / "best.keras"
    epoch = best_epoch(workdir, history)
    if epoch is None or epoch > len(history):
        return None
    if epoch == len(history):
        return epoch, None
    digest = file_digest(best)
    model = keras.models.load_model(best, safe_mode=True)
    if digest != file_digest(best) or best_epoch(workdir, history) != epoch:
        return None
    return epoch, model


def restore_carried_best(workdir: Path, model: keras.Model) -> None:
    """``best.keras`` and ``best.json`` again from what ``carry`` kept, so the resumed
    run ranks its whole history. ``model``: the resumed model, holding the carried
    last epoch; it is saved as it is when that epoch is the best, else a copy takes
    the best epoch's weights (the training model itself must keep its own)."""
    named = workdir / BEST_EPOCH
    if (workdir / "best.keras").exists() or not named.exists():
        return
    if (workdir / CARRIED_BEST).exists():
        model = keras.models.clone_model(model)
        model.set_weights(read_packed(workdir / CARRIED_BEST)[2])
    save_best(workdir, model, int(json.loads(named.read_text())["epoch"]))


def save_best(workdir: Path, model: keras.Model, epoch: int) -> None:
    """``best.keras``, then ``best.json`` naming its epoch and digest (``best_epoch`` checks the pair)."""
    save_atomic(model, workdir / "best.keras")
    write_text_atomic(workdir / BEST_EPOCH, json.dumps({"epoch": epoch, "sha256": file_digest(workdir / "best.keras")}))


def resume_checkpoint(workdir: Path, history: pd.DataFrame | None = None) -> str | None:
    """The file ``fit`` resumes ``workdir`` from: 'last.keras' (weights and optimiser),
    ``CARRIED_WEIGHTS`` (a ``carry``), or None when it starts afresh (no finished epoch)."""
    if not len(read_history(workdir) if history is None else history):
        return None
    return next((name for name in ("last.keras", CARRIED_WEIGHTS) if (Path(workdir) / name).exists()), None)


def read_history(workdir: Path) -> pd.DataFrame:
    path = Path(workdir) / "history.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=HISTORY_COLUMNS)


class _EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: history row, last/best checkpoints, early-stopping check.

    Early stopping is decided from the saved history, so it survives a resume.
    """

    def __init__(self, workdir: Path, history: pd.DataFrame, patience: int, policy: str):
        super().__init__()
        self.workdir, self.history, self.patience, self.policy = workdir, history, patience, policy
        self.best = best_epoch(workdir, history)
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            **{k: float(logs.get(k, np.nan)) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "learning_rate": current_learning_rate(self.model.optimizer),
            "seconds": time.perf_counter() - self._start,
            "compute": self.policy,
        }
        self.history = pd.concat([self.history, pd.DataFrame([row])], ignore_index=True)
        if self.best is None or row["val_accuracy"] >= self.history["val_accuracy"].iloc[self.best - 1]:
            save_best(self.workdir, self.model, row["epoch"])
            self.best = row["epoch"]
        save_atomic(self.model, self.workdir / "last.keras")
        # history.csv last: its length is the number of epochs whose checkpoint is safe.
        write_text_atomic(self.workdir / "history.csv", self.history.to_csv(index=False))
        if self.patience and _patience_exhausted(self.history, self.patience):
            self.model.stop_training = True


class _ProgressCallback(keras.callbacks.Callback):
    def __init__(self, progress: ProgressFn, epochs: int, batches: int):
        super().__init__()
        self.progress, self.epochs, self.batches = progress, epochs, batches
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.progress(Progress(epoch, self.epochs, 0, self.batches, {}))

    def on_train_batch_end(self, batch, logs=None):
        self.progress(Progress(self.epoch, self.epochs, batch + 1, self.batches, dict(logs or {})))

    def on_epoch_end(self, epoch, logs=None):
        self.progress(Progress(epoch, self.epochs, self.batches, self.batches, dict(logs or {})))


# ------------------------------------------------------------------------ fit


@dataclass
class FitResult:
    model: keras.Model  # best epoch by val_accuracy, as models.inference_model
    history: pd.DataFrame
    epoch: int  # the epoch whose weights ``model`` holds
    train_seconds: float
    train: FaceDataset
    val: FaceDataset


def fit(
    config: TrainConfig,
    data: FaceDataset,
    workdir: Path,
    progress: ProgressFn | None = None,
    strategy=None,
    init: keras.Model | None = None,
    teacher: keras.Model | None = None,
    policy: str | None = None,
) -> FitResult:
    """Train (or resume training) ``config`` on ``data`` with checkpoints in ``workdir``.

    ``strategy``: a ``tf.distribute`` strategy (MirroredStrategy for several
    GPUs, MultiWorkerMirroredStrategy from TF_CONFIG); the batch size is global.
    None: one device (under the other backends, the only choice).
    ``init``: the trained model ``config.init_from`` names (same architecture):
    a fresh start copies its weights (fine-tuning); a resumed one ignores it.
    ``teacher``: the model ``config.teacher`` names; its flip-TTA probabilities on
    the training faces are mixed into the targets (``distill_targets``).
    A folder made by ``carry`` (weights, no ``last.keras``) resumes with a new
    optimiser at the step where the run stopped (``resume_carried``).
    ``policy``: compute this call's epochs in this dtype policy instead of the one
    ``config.mixed_precision`` names (``with_policy``); the run stays the same run,
    and history.csv's ``compute`` column says which epochs ran in which.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    history = read_history(workdir)
    checkpoint = resume_checkpoint(workdir, history)
    resumed, carried = checkpoint == "last.keras", checkpoint == CARRIED_WEIGHTS
    if checkpoint is None:
        history = history.iloc[:0]
    done = len(history)
    member_seed = config.seed + (config.bootstrap or 0)
    keras.utils.set_random_seed(stream_seed(member_seed, done))  # init, and the augmentation layers' draws
    train, val = training_split(data, config)
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{data.source}: too few labelled '{config.train_split}' faces to train and validate")
    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    policy = policy or POLICIES[config.mixed_precision]
    with scope():
        if resumed:
            model = keras.models.load_model(workdir / "last.keras", safe_mode=True)
            if compute_policy(model) != policy:
                model = with_policy(model, config, train, policy)
        elif carried:  # weights below, once the batches for its moments exist
            model = build_compiled(config, train, policy, stats=read_packed(workdir / CARRIED_WEIGHTS)[:2])
        else:
            model = build_compiled(config, train, policy, stats=input_stats(init) if init is not None else None)
            if init is not None:
                copy_weights(init, model)
    targets = train.labels
    if teacher is not None:
        targets = distill_targets(train.labels, predict_probs(teacher, train.images, tta="flip"), config.distill_weight)
    # Members that all see every face differ only by their seed: their batch order must differ too.
    # (Bagging members keep config.seed here, as when the shipped ones were trained.)
    shuffle_seed = config.seed if config.resample else member_seed
    train_ds = make_dataset(train.images, targets, config.batch_size, shuffle=True, seed=stream_seed(shuffle_seed, done))
    val_ds = make_dataset(val.images, val.labels, 512, shuffle=False)
    if carried:
        with scope():
            resume_carried(model, workdir / CARRIED_WEIGHTS, train_ds, done * steps_per_epoch(config, train))
            restore_carried_best(workdir, model)
    callbacks: list[keras.callbacks.Callback] = [_EpochCheckpoint(workdir, history, config.early_stopping, policy)]
    if progress is not None:
        callbacks.append(_ProgressCallback(progress, config.epochs, steps_per_epoch(config, train)))
    stopped_early = done and config.early_stopping and _patience_exhausted(history, config.early_stopping)
    if done < config.epochs and not stopped_early:
        model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, initial_epoch=done, callbacks=callbacks,
                  shuffle=False, verbose=0)  # train_ds reshuffles itself each epoch
    history = read_history(workdir)
    # Without a best.keras (a carried run with no epoch left to train) the last epoch's weights, in hand, are the answer.
    epoch = best_epoch(workdir, history)
    best = keras.models.load_model(workdir / "best.keras", safe_mode=True) if epoch else model
    return FitResult(
        model=inference_model(best, config.model),
        history=history,
        epoch=epoch or len(history),
        train_seconds=float(history["seconds"].sum()),
        train=train,
        val=val,
    )


def _patience_exhausted(history: pd.DataFrame, patience: int) -> bool:
    return len(history) - (int(history["val_accuracy"].idxmax()) + 1) >= patience


def native_bfloat16(cpuinfo: str | None = None) -> bool | None:
    """Whether this machine computes bfloat16 in hardware (None: it cannot tell).

    Why it matters: ``mixed_bfloat16`` is the faster policy only where bfloat16 is
    native (AMX or AVX-512 BF16 CPUs, GPUs). Elsewhere TensorFlow emulates it and
    training gets several times *slower*: ferlab trained at 8.6 images/s against
    60.9 in float32 on a 2-core AVX2 EPYC (``bench/train_throughput.py``).
    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read, with a GPU check, when None).
    """
    if cpuinfo is None:
        if gpu_names():
            return True
        cpuinfo = _cpuinfo()
    flags = set((_cpuinfo_field(cpuinfo, "flags") or "").split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def hardware() -> str:
    """Where a run trained, for its metrics: CPU model and core count, or the GPUs."""
    gpus = gpu_names()
    if gpus:
        return ", ".join(gpus)
    model = _cpuinfo_field(_cpuinfo(), "model name") or "CPU"
    return f"{model} x{os.cpu_count()} cores"


def gpu_names() -> list[str]:
    """The GPUs the Keras backend trains on, by name; [] on a CPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(g).get("device_name", "GPU")
                for g in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def _cpuinfo_field(cpuinfo: str, key: str) -> str | None:
    """The value of the first '<key> : value' line (every core repeats the same ones)."""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith(key)), None)


def _cpuinfo() -> str:
    """The text of /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
