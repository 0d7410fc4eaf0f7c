"""The run store: one folder per training, named by what decides its result.

``<root>/<run-id>/`` holds ``config.json``, ``history.csv``, ``model.keras``,
``predictions.npz`` and, written last, ``metrics.json`` (and ``start_history.csv``
when it started from another run's weights). A run counts as
finished only once ``metrics.json`` exists, so a killed training is never
listed as done; asking for it again resumes it. The run id hashes the config
with the data's fingerprint: the same request returns the stored run at once.
An ensemble is a run whose config lists its member runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from core import packing
from core.data import FaceDataset, canonical_split
from core.evaluation import ENSEMBLE_RULES, combine, forward_select, metrics, predict_probs
from core.models import count_params, inference_model
from core.training import (
    BEST_EPOCH,
    CARRIED_BEST,
    CARRIED_WEIGHTS,
    FitResult,
    Progress,
    ProgressFn,
    TrainConfig,
    best_epoch,
    fit,
    hardware,
    read_history,
    resume_checkpoint,
    save_atomic,
    training_split,
    write_text_atomic,
)

ENV_ROOT = "FERLAB_RUNS"
REPORT_SPLIT = "PublicTest"  # the held-out split whose accuracy every run reports
START_CURVE = "start_history.csv"  # the epochs of the run a training started from (``init_from``): ``Run.curve``


def default_root() -> Path:
    return Path(os.environ.get(ENV_ROOT, "runs"))


@dataclass(frozen=True)
class Run:
    """A finished run on disk (read lazily)."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @cached_property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    @cached_property
    def metrics(self) -> dict:
        return json.loads((self.path / "metrics.json").read_text())

    @property
    def is_ensemble(self) -> bool:
        return self.config.get("kind") == "ensemble"

    @property
    def is_bagged(self) -> bool:
        """Trained on a bootstrap resample (a bagging member: 63% of the faces), not on every training face
        as a plain run or a deep-ensemble member (``--no-resample``) is."""
        return self.config.get("bootstrap") is not None and self.config.get("resample", True)

    @property
    def label(self) -> str:
        """Short human name: 'ferlab (a1b2c3)', 'ensemble x5 of ferlab (…)'."""
        return self.config.get("label", self.id)

    def history(self) -> pd.DataFrame:
        return read_history(self.path)

    @cached_property
    def start_epochs(self) -> int:
        """Epochs of the run this one started from (``init_from``), the start of its
        ``curve``; 0 for a run trained from scratch. An ensemble's: its first member's."""
        if self.is_ensemble:
            return Run(self.member_paths()[0]).start_epochs
        path = self.path / START_CURVE
        return len(pd.read_csv(path)) if path.exists() else 0

    def curve(self) -> pd.DataFrame:
        """The history to plot: the epochs of the run this one started from
        (``init_from``) first, then its own, numbered on from there.

        Why: a run that anneals a long run's checkpoint for 4 epochs would
        otherwise plot as 4 points, hiding the 70 epochs that made its weights.
        ``history()`` stays the run's own epochs (its metrics count those).
        """
        own = self.history()
        if not (self.path / START_CURVE).exists():
            return own
        start = pd.read_csv(self.path / START_CURVE)
        return pd.concat([start, own.assign(epoch=own["epoch"] + len(start))], ignore_index=True)

    def predictions(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "predictions.npz", allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def train_config(self) -> TrainConfig:
        """A single run's training config (an ensemble's members each have theirs); the
        folder's own notes (kind, label, a snapshot's epochs) are not part of it."""
        return TrainConfig.from_dict(_config_fields(self.config))

    @property
    def base_config(self) -> dict:
        """The training config that describes this run: its own; a bagging ensemble's
        shared one; for an ensemble combined from different runs (``RunStore.combine``),
        its first member's (they all share the data and the validation split)."""
        if not self.is_ensemble:
            return self.config
        return self.config["base"] or Run(self.member_paths()[0]).config

    @property
    def arch(self) -> str:
        """'ferlab'; a combined ensemble's member architectures, 'ferlab+vgg9'."""
        if self.is_ensemble and self.config["base"] is None:
            return "+".join(dict.fromkeys(Run(p).config["model"]["arch"] for p in self.member_paths()))
        return self.base_config["model"]["arch"]

    @property
    def weights(self) -> str:
        """How the weights are stored: 'float32', 'float16' or 'int8' (``RunStore.pack``), or for an
        ensemble its members' ('float16+float32' when ``combine`` mixed packed and unpacked runs)."""
        if self.is_ensemble:
            return "+".join(sorted({Run(path).weights for path in self.member_paths()}))
        return self.metrics.get("stored_as", "float32")

    def other_data(self, fingerprint: str) -> str | None:
        """Why data of ``fingerprint`` is not the data set this run was trained on, or None.

        Packing, choosing members on re-predicted validation faces, distilling,
        combining and evaluating all need the run's own data set (its validation
        split, its held-out faces): one check, one message, wherever it is asked.
        """
        trained_on = self.metrics["data"]
        if trained_on["fingerprint"] == fingerprint:
            return None
        return f"{self.id} was trained on other data ({trained_on['source']}, fingerprint {trained_on['fingerprint']})"

    def member_paths(self) -> list[Path]:
        """Members live beside their ensemble; a combined ensemble's may be shipped runs."""
        roots = [self.path.parent, *shipped_roots()]
        return [next((r / m for r in roots if (r / m / "metrics.json").exists()), self.path.parent / m)
                for m in self.config.get("members", [])]

    def model(self) -> keras.Model:
        """The Keras model (an ensemble: one model averaging its members' probabilities)."""
        if not self.is_ensemble:
            # The metrics as they are now, not as this object cached them: a pack since (in another process, say)
            # has moved the weights to another file.
            stored_as = json.loads((self.path / "metrics.json").read_text()).get("stored_as", "float32")
            file = packing.weights_file(self.path, stored_as)
            if file.suffix == ".keras":
                return keras.models.load_model(file, safe_mode=True)
            return packing.load_packed(file, self.train_config().model)  # by RunStore.pack
        members = [Run(p).model() for p in self.member_paths()]
        # Re-wrapped under unique names: members of one preset share a model name.
        members = [keras.Model(m.input, m.output, name=f"member{i}") for i, m in enumerate(members)]
        face = keras.Input((48, 48, 1), name="face")
        probs = keras.layers.Average(name="probs")([m(face) for m in members])
        return keras.Model(face, probs, name=self.id)


ENV_SHIPPED = "FERLAB_SHIPPED"  # "0": leave the shipped runs out (tests, a clean classroom store)


def shipped_roots() -> list[Path]:
    """The trained runs that come with the repo (``models/<name>/``), read-only."""
    if os.environ.get(ENV_SHIPPED, "1") == "0":
        return []
    models = Path(__file__).resolve().parent.parent / "models"
    return sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []


def _counted(names: Iterable[str]) -> str:
    """'3 ferlab + vgg9' for ferlab, ferlab, vgg9, ferlab: a label that stays short for a deep ensemble."""
    counts = Counter(names)
    return " + ".join(f"{n} {name}" if n > 1 else name for name, n in counts.items())


class RunStore:
    """Trains into ``root``; lists and finds runs in ``root`` and the read-only ``shipped`` folders."""

    def __init__(self, root: Path | str | None = None, shipped: list[Path] | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.shipped = list(shipped) if shipped is not None else shipped_roots()

    # ------------------------------------------------------------- look-up

    @staticmethod
    def run_id(config: dict, fingerprint: str) -> str:
        """'<arch>-<hash>': readable in a listing, unique per (config, data)."""
        digest = hashlib.sha256((json.dumps(config, sort_keys=True) + fingerprint).encode()).hexdigest()[:10]
        prefix = "ensemble" if config.get("kind") == "ensemble" else config["model"]["arch"]
        return f"{prefix}-{digest}"

    def _finished(self, run_id: str) -> Run | None:
        for root in (self.root, *self.shipped):
            if (root / run_id / "metrics.json").exists():
                return Run(root / run_id)
        return None

    def get(self, run_id: str) -> Run | None:
        """The finished run of that id (a unique prefix will do), or None."""
        found = self._finished(run_id)
        if found is not None:
            return found
        matches = [r for r in self.list() if r.id.startswith(run_id)]
        return matches[0] if len(matches) == 1 else None

    def require(self, run_id: str, purpose: str = "") -> Run:
        """``get``, or a ValueError naming the missing run (and what it was wanted for)."""
        if (run := self.get(run_id)) is None:
            raise ValueError(f"no finished run '{run_id}'{purpose} (python -m core list shows them)")
        return run

    def list(self) -> list[Run]:
        """Finished runs: shipped ones first, then the store's own, oldest first.

        An ensemble whose member folder is gone (removed by hand) is left out:
        every view of it would read that member."""
        runs = []
        for root in (*self.shipped, self.root):
            if root.exists():
                done = [p for p in root.iterdir() if (p / "metrics.json").exists()]
                runs += [Run(p) for p in sorted(done, key=lambda p: (p / "metrics.json").stat().st_mtime)]
        return [r for r in runs if not r.is_ensemble or all((p / "metrics.json").exists() for p in r.member_paths())]

    def in_progress(self) -> list[tuple[str, dict]]:
        """(run id, last progress tick) of unfinished runs that have started.

        Each tick says ``alive``: whether a process trains the run now (holds its
        lock, ``RunBusy``), so a killed training shows as interrupted at once and a
        slow one (a long validation, the final predictions) still as running.
        """
        if not self.root.exists():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            tick = p / "progress.json"
            if tick.exists() and not (p / "metrics.json").exists():
                try:
                    state = json.loads(tick.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                out.append((p.name, {**state, "alive": training_now(p)}))
        return out

    def delete(self, run_id: str) -> None:
        """Remove a run of the store's own (shipped runs are read-only)."""
        path = self.root / run_id
        if not path.is_dir():
            raise KeyError(f"no run '{run_id}' in {self.root} (shipped runs cannot be deleted)")
        users = [r.id for r in self.list() if run_id in r.config.get("members", [])]
        if users:
            raise ValueError(f"run {run_id} is a member of {', '.join(users)}: delete the ensemble first")
        shutil.rmtree(path)

    # ------------------------------------------------------------ training

    def train(
        self,
        config: TrainConfig,
        data: FaceDataset,
        progress: ProgressFn | None = None,
        strategy=None,
        policy: str | None = None,
    ) -> Run:
        """The finished run for (config, data): the stored one, or trained (resumed) now.

        ``policy``: compute in this Keras dtype policy rather than the config's (``fit``)."""
        cfg = config.to_dict()
        run_id = self.run_id(cfg, data.fingerprint())
        if (done := self._finished(run_id)) is not None:
            return done
        if config.init_from is not None and (problem := self._start_problem(config.init_from, cfg, data.fingerprint())):
            raise ValueError(f"--init-from: {problem}; its weights have trained on this run's validation faces")
        path = self.root / run_id
        path.mkdir(parents=True, exist_ok=True)
        with _training_lock(path):
            if (done := self._finished(run_id)) is not None:  # finished by the process that held the lock
                return done
            # A resumed run ignores its start weights, and the run it started from may have moved on since.
            init = None
            if config.init_from is not None and resume_checkpoint(path) is None:
                init = self.start_weights(config.init_from)
                write_text_atomic(path / START_CURVE, self.start_curve(config.init_from).to_csv(index=False))
            teacher = self._teacher(config, data).model() if config.teacher is not None else None
            member = "bag" if config.resample else "member"
            label = f"{config.model.arch}" + (f" {member}{config.bootstrap}" if config.bootstrap is not None else "")
            write_text_atomic(path / "config.json", json.dumps({**cfg, "kind": "single", "label": label}, indent=2))
            result = fit(config, data, path, progress=_Ticker(path, progress), strategy=strategy, init=init,
                         teacher=teacher, policy=policy)
            save_atomic(result.model, path / "model.keras")
            self._finish(path, data, config, result)
        return Run(path)

    def start_weights(self, ref: str) -> keras.Model:
        """The model ``init_from`` names: a finished run's id, or ``RUN@EPOCH``, the
        checkpoint of an unfinished run of this store at that epoch.

        Why the epoch: an unfinished run's checkpoint moves on as it trains, while
        the run that starts from it keeps one id; the epoch pins which weights that
        id stands for, and a checkpoint at another epoch is refused, not used.
        It lets a long run's weights be annealed (a short, low-rate schedule) on a
        machine too slow to finish the run itself.
        """
        if "@" not in ref:
            return self.require(ref, " to start from").model()
        run_id, _, epoch = ref.partition("@")
        path = self.root / run_id
        if not epoch.isdigit() or not (path / "config.json").exists():
            raise ValueError(f"'{ref}': name an unfinished run of {self.root} and one of its epochs (RUN@EPOCH)")
        done = len(read_history(path))
        if done != int(epoch):
            raise ValueError(f"'{ref}': the checkpoint of {run_id} is at epoch {done}, not {epoch}")
        if (path / "last.keras").exists():
            return keras.models.load_model(path / "last.keras", safe_mode=True)
        if (path / CARRIED_WEIGHTS).exists():
            return packing.load_packed(path / CARRIED_WEIGHTS, Run(path).train_config().model)
        raise ValueError(f"'{ref}': {path} holds no checkpoint (last.keras or {CARRIED_WEIGHTS})")

    def _start_problem(self, ref: str, config: dict, fingerprint: str) -> str | None:
        """Why the run ``init_from`` names would leak validation faces into a training
        of ``config`` on the data of ``fingerprint``, or None.

        Weights trained on the same data with another split have learnt about 90%
        of this run's validation faces: they would choose its best epoch and lift
        the validation accuracy that ``combine --select`` and the dashboard trust.
        Weights from other data are fine-tuning, allowed.
        """
        run_id = ref.partition("@")[0]
        start = self.get(run_id) or Run(self.root / run_id)
        if (start.path / "metrics.json").exists():
            same_data = start.other_data(fingerprint) is None
        elif (start.path / "config.json").exists():  # unfinished (RUN@EPOCH): its id hashes its data
            same_data = self.run_id(start.train_config().to_dict(), fingerprint) == run_id
        else:
            return None  # no such run: start_weights says so
        return _other_split(run_id, start.base_config, config) if same_data else None

    def start_curve(self, ref: str) -> pd.DataFrame:
        """The curve of the run ``init_from`` names; for ``RUN@EPOCH`` its history is at
        that epoch, ``start_weights`` made sure of it."""
        if "@" not in ref:
            return self.require(ref, " to start from").curve()
        return Run(self.root / ref.partition("@")[0]).curve()

    def _teacher(self, config: TrainConfig, data: FaceDataset) -> Run:
        """The finished run ``config.teacher`` names, if it lines up with the student (``split_problem``)."""
        teacher = self.require(config.teacher, " to distil from")
        if (problem := split_problem(teacher, config.to_dict(), data.fingerprint())) is not None:
            raise ValueError(f"teacher {problem}")
        return teacher

    def snapshot(self, workdir: Path, data: FaceDataset) -> Run:
        """A finished run, in this store, from the best checkpoint so far of an
        unfinished training (its ``workdir``), which is left untouched.

        Long CPU trainings span sessions; a snapshot lets the dashboard use the
        best weights so far. Its config records the epochs done, so its id differs
        from the training's own and the same ``train`` command still resumes it.
        """
        workdir = Path(workdir)
        history = read_history(workdir)
        epoch = best_epoch(workdir, history) if len(history) else None
        if epoch is None:
            raise ValueError(f"{workdir}: no finished epoch to take a snapshot of")
        unfinished = Run(workdir)
        base, config = unfinished.config, unfinished.train_config()  # config.json read once
        done = len(history)
        cfg = {**config.to_dict(), "snapshot_of": workdir.name, "epochs_done": done}
        path = self.root / self.run_id(cfg, data.fingerprint())
        path.mkdir(parents=True, exist_ok=True)
        label = f"{base.get('label', config.model.arch)} (epoch {done} of {config.epochs})"
        write_text_atomic(path / "config.json", json.dumps({**cfg, "kind": "single", "label": label}, indent=2))
        write_text_atomic(path / "history.csv", history.to_csv(index=False))
        train, val = training_split(data, config)
        model = inference_model(keras.models.load_model(workdir / "best.keras", safe_mode=True), config.model)
        save_atomic(model, path / "model.keras")
        self._finish(path, data, config, FitResult(model, history, epoch, float(history["seconds"].sum()), train, val))
        return Run(path)

    def _finish(self, path: Path, data: FaceDataset, config: TrainConfig, result: FitResult, keep: dict | None = None) -> None:
        """Predictions and metrics of a trained model; ``keep``: metrics fields to carry over as they are."""
        preds: dict[str, np.ndarray] = {}
        report: dict = {}
        splits = {"val": result.val}
        test = _report_split(data)
        if test is not None:
            splits["test"] = test
        for key, faces in splits.items():
            probs = predict_probs(result.model, faces.images)
            preds.update({f"{key}_y": faces.labels, f"{key}_probs": probs, f"{key}_ids": faces.ids.astype(str)})
            report[key] = metrics(faces.labels, probs)
            if key == "test":
                report["test_tta"] = metrics(faces.labels, predict_probs(result.model, faces.images, tta="flip"))
        _save_npz(path / "predictions.npz", preds)
        history = result.history
        report.update(
            params=count_params(result.model),
            train_seconds=result.train_seconds,
            epochs_run=int(len(history)),
            best_epoch=result.epoch,
            hardware=hardware(),
            data={"source": data.source, "fingerprint": data.fingerprint(), "test_split": REPORT_SPLIT if test is not None else None},
            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        report.update(keep or {})
        write_text_atomic(path / "metrics.json", json.dumps(report, indent=2))
        # The checkpoints go once the metrics mark the run finished: a kill in between leaves a finished run, not a lost one.
        for name in ("last.keras", "best.keras", BEST_EPOCH, "progress.json", CARRIED_WEIGHTS, CARRIED_BEST):
            (path / name).unlink(missing_ok=True)

    def ensemble(
        self,
        config: TrainConfig,
        members: int,
        data: FaceDataset,
        progress: ProgressFn | None = None,
        strategy=None,
        policy: str | None = None,
    ) -> Run:
        """Bagging: ``members`` runs of ``config``, each on its own bootstrap resample,
        combined by the three rules (their metrics all stored, averaging the default).
        ``strategy``, ``policy``: how each member trains (``train``).

        With ``config.resample`` off, every member trains on all the training faces
        and members differ only by their seed (initial weights, batch order,
        augmentation): a "deep ensemble" (Lakshminarayanan et al. 2017). A resample
        holds about 63% of the distinct faces, which costs a data-hungry net more
        than the diversity it adds."""
        if members < 2:
            raise ValueError("an ensemble needs at least 2 members")
        runs = [self.train(_bootstrap(config, i), data, progress, strategy, policy) for i in range(members)]
        return self._stored_ensemble(ensemble_config(config, [r.id for r in runs]), data.fingerprint(), runs)

    def train_member(
        self,
        config: TrainConfig,
        members: int,
        member: int,
        data: FaceDataset,
        progress: ProgressFn | None = None,
        strategy=None,
        policy: str | None = None,
    ) -> Run:
        """Member ``member`` alone of ``ensemble(config, members, ...)``: the very run
        the ensemble would train, so a member trained here (on another machine, in
        another session) is a cache hit when the ensemble is built."""
        if not 0 <= member < members:
            raise ValueError(f"--member must be between 0 and {members - 1} (--members {members})")
        return self.train(_bootstrap(config, member), data, progress, strategy, policy)

    def combine(self, run_ids: list[str], select: bool = False, tta: str = "none", data: FaceDataset | None = None) -> Run:
        """An ensemble of finished single runs of any architectures, by the same three rules.

        Bagging varies the data; this varies the model too (a ferlab and a vgg9
        disagree more than two ferlabs, which is what averaging feeds on). The runs
        must share the data set and the validation split (``split_problem``), so
        their stored predictions line up face for face; nothing is trained or
        predicted again.
        ``select``: the runs are candidates; the ensemble holds those that greedy
        forward selection on validation accuracy keeps (``forward_select``), and its
        metrics.json lists the candidates under ``selected_from``: its validation
        figures were the ones chosen on, so its test figures are the honest ones.
        ``tta`` (with ``select``): choose on the candidates' validation predictions
        under that test-time augmentation, predicted again from ``data``. Why: TTA
        lifts members unevenly (on FER2013 validation, rotate-zoom lifts FER Lab's
        wide CNN 2.7 points, a bagged ferlab 1.7), so the members that help plain
        predictions need not be those that help the ones the ensemble is used with.
        """
        if tta != "none" and not select:
            raise ValueError("--tta chooses the members: it goes with --select")
        runs = self._combinable(run_ids)
        fingerprint = runs[0].metrics["data"]["fingerprint"]
        keep = None
        selection = None
        if select:
            probs, y = _validation_probs(runs, tta, data)
            chosen = forward_select(probs, y)
            if len(chosen) < 2:
                raise ValueError(f"selection kept only {runs[chosen[0]].id}: no other run raises its validation accuracy")
            keep = {"selected_from": [run.id for run in runs]}
            if tta != "none":
                val = metrics(y, np.mean([probs[i] for i in chosen], axis=0))["accuracy"]
                keep["selected_with"] = {"tta": tta, "val_accuracy": val}
            # In the id: the same members chosen from other candidates (or not chosen) are another record.
            selection = {"from": keep["selected_from"], "tta": tta}
            runs = [runs[i] for i in chosen]
        cfg = {"kind": "ensemble", "members": [r.id for r in runs], "base": None,
               "label": "ensemble of " + _counted(r.config["model"]["arch"] for r in runs)}
        if selection is not None:
            cfg["selection"] = selection
        return self._stored_ensemble(cfg, fingerprint, runs, keep)

    def _combinable(self, run_ids: list[str]) -> list[Run]:
        """The finished single runs ``run_ids`` names, refused unless their predictions line up."""
        if len(run_ids) < 2:
            raise ValueError("combine needs at least 2 runs")
        runs = [self.require(run_id) for run_id in run_ids]
        for run in runs:
            if run.is_ensemble:
                raise ValueError(f"{run.id} is an ensemble: combine its members (python -m core list shows them)")
        if len({r.id for r in runs}) < len(runs):
            raise ValueError("each run can be combined once")
        fingerprint = runs[0].metrics["data"]["fingerprint"]
        for run in runs[1:]:
            if (problem := split_problem(run, runs[0].config, fingerprint)) is not None:
                raise ValueError(f"{problem} (compared with {runs[0].id})")
        return runs

    def _stored_ensemble(self, cfg: dict, fingerprint: str, runs: list[Run], keep: dict | None = None) -> Run:
        """The ensemble folder for ``cfg``: found (shipped or stored), or written now
        from its finished members' stored predictions."""
        run_id = self.run_id(cfg, fingerprint)
        if (done := self._finished(run_id)) is not None:
            return done
        path = self.root / run_id
        path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path / "config.json", json.dumps(cfg, indent=2))
        _write_ensemble(path, cfg, runs, keep)
        return Run(path)

    # ------------------------------------------------------------- packing

    def pack(self, run_id: str, data: FaceDataset, kernels: str = "float16") -> Run:
        """Store a finished run of this store with ``kernels`` ('float16': half the bytes,
        'int8': a quarter; ``core.packing``).

        Its predictions and metrics are measured again with the packed weights, so
        what the dashboard shows is what the stored model does, and ``metrics.json``
        keeps the float32 accuracies under ``"float32"``: the cost is on record. A
        float16 run can still become int8 (its float16 accuracies kept too, under
        ``"float16"``), never the other way. An ensemble packs its members and
        recombines them. ``data`` must be the data
        set the run was trained on (its validation split is re-measured).
        """
        run = self.get(run_id)
        not_here = f"no finished run '{run_id}' in {self.root} to pack (shipped runs are read-only)"
        if run is None:
            raise ValueError(not_here)
        if (problem := run.other_data(data.fingerprint())) is not None:
            raise ValueError(f"run {problem}: pack it with that data set")
        stored_as = run.metrics.get("stored_as", "float32")
        if stored_as == kernels:
            return run  # packed already (a shipped member of a new ensemble, say): nothing to write
        if packing.PRECISIONS.index(kernels) < packing.PRECISIONS.index(stored_as):
            raise ValueError(f"run {run.id} is packed as {stored_as} already: its {packing.PRECISIONS[0]} weights are gone, so it cannot be packed as {kernels}")
        if run.path.parent != self.root:
            raise ValueError(not_here)
        before = run.metrics
        # the accuracies at each precision the run was stored at (float32 .. now): the cost on record
        stored_at = packing.PRECISIONS[: packing.PRECISIONS.index(stored_as) + 1]
        keep = {"stored_as": kernels, "hardware": before["hardware"], "finished": before["finished"],
                **{p: before.get(p, _accuracies(before)) for p in stored_at}}
        if run.is_ensemble:
            members = [self.pack(p.name, data, kernels) for p in run.member_paths()]
            rules = before.get("rules_float32") or {rule: _accuracies(m) for rule, m in before["rules"].items()}
            _write_ensemble(run.path, run.config, members, keep={**keep, "rules_float32": rules})
            return Run(run.path)
        config = run.train_config()
        file = packing.weights_file(run.path, kernels)
        packing.save_packed(run.model(), file, kernels)
        packed = packing.load_packed(file, config.model)
        train, val = training_split(data, config)
        self._finish(run.path, data, config, FitResult(packed, run.history(), before["best_epoch"], before["train_seconds"], train, val), keep=keep)
        # Only now, with the metrics naming the packed file, are the others dropped: a kill before leaves a whole run.
        for other in packing.PRECISIONS:
            if other != kernels:
                packing.weights_file(run.path, other).unlink(missing_ok=True)
        self._recombine_users(run.id)
        return Run(run.path)

    def _recombine_users(self, run_id: str) -> None:
        """Write again each ensemble of this store that holds ``run_id``, just packed.

        Why: an ensemble serves its members' weights as they are now, so its stored
        predictions and metrics must be theirs too; its rule accuracies from before
        stay on record under ``rules_float32``, as when the ensemble itself is packed.
        """
        for user in self.list():
            if user.is_ensemble and user.path.parent == self.root and run_id in user.config["members"]:
                before = user.metrics
                keep = {k: v for k, v in before.items() if k not in ("rules", "val", "test", "weights")}
                keep["rules_float32"] = before.get("rules_float32") or {r: _accuracies(m) for r, m in before["rules"].items()}
                _write_ensemble(user.path, user.config, [Run(p) for p in user.member_paths()], keep)


def _validation_probs(runs: list[Run], tta: str, data: FaceDataset | None) -> tuple[list[np.ndarray], np.ndarray]:
    """Each run's (N, 7) validation probabilities under ``tta``, and the (N,) labels.

    Without TTA they are the stored ones; with it, predicted again from ``data``
    (the runs share the data set and the validation split: ``_combinable``).
    """
    stored = runs[0].predictions()
    y = stored["val_y"]
    if tta == "none":
        return [run.predictions()["val_probs"] for run in runs], y
    if data is None:
        raise ValueError(f"--tta {tta} predicts the candidates' validation faces again: give --data, the data set they were trained on")
    val = _validation_faces(runs[0], data)
    return [predict_probs(run.model(), val.images, tta=tta) for run in runs], y


def _validation_faces(run: Run, data: FaceDataset) -> FaceDataset:
    """The faces of ``data`` that ``run`` (or an ensemble's members) held out for
    validation: those its stored validation predictions are on, checked against them."""
    if (problem := run.other_data(data.fingerprint())) is not None:
        raise ValueError(f"--data: {problem}; give that data set")
    _, val = training_split(data, TrainConfig.from_dict(_config_fields(run.base_config)))
    if _rows(val.ids) != _rows(run.predictions()["val_ids"]):
        raise ValueError(f"the validation faces of --data do not match those stored with {run.id}")
    return val


def _rows(ids: np.ndarray) -> list[str]:
    """Face ids without a CSV's file name ('fer2013.csv.gz:line 5' -> '5'): the data
    fingerprint ignores names, so fer2013.csv and fer2013.csv.gz are one data set."""
    return [i.rpartition(":line ")[2] if ":line " in i else i for i in ids.astype(str)]


def split_problem(run: Run, config: dict, fingerprint: str) -> str | None:
    """Why ``run`` does not line up with a training of ``config`` on the data of
    ``fingerprint`` (other data, or another validation split), or None when it does.

    Distilling and combining both need it. A teacher that saw the student's
    validation faces would leak their labels into the student's targets; runs
    combined from different splits would have no common validation faces.
    """
    if (problem := run.other_data(fingerprint)) is not None:
        return problem
    return _other_split(run.id, run.base_config, config)


def _other_split(run_id: str, theirs: dict, ours: dict) -> str | None:
    """Why a run of config ``theirs`` holds out other faces than a training of ``ours`` (same data), or None."""
    split = ("train_split", "val_fraction", "seed")
    their_split = tuple(theirs.get(k) for k in split)
    if their_split != tuple(ours.get(k) for k in split):
        return (f"{run_id} has another validation split ({', '.join(f'{k}={v}' for k, v in zip(split, their_split))}); "
                "the same --val-fraction and --seed are needed")
    return None


def evaluate(run: Run, data: FaceDataset, split: str = REPORT_SPLIT, tta: str = "none") -> dict:
    """Metrics of a stored run on any labelled split of ``data``; an ensemble reports every rule.

    ``split="validation"`` on a data set with no Validation rows (FER2013) means the
    run's own held-out validation faces, those its metrics.json ``val`` figures are
    on: a TTA or rule is chosen on them, so its validation figure must be reprintable.
    """
    faces = _evaluation_faces(run, data, split)
    if not run.is_ensemble:
        return {"single": metrics(faces.labels, predict_probs(run.model(), faces.images, tta=tta))}
    member_runs = [Run(p) for p in run.member_paths()]
    probs = [predict_probs(r.model(), faces.images, tta=tta) for r in member_runs]
    weights = [r.metrics["val"]["accuracy"] for r in member_runs]
    return {rule: metrics(faces.labels, combine(probs, rule, weights)) for rule in ENSEMBLE_RULES}


# ----------------------------------------------------------------- helpers


def _evaluation_faces(run: Run, data: FaceDataset, split: str) -> FaceDataset:
    """The labelled faces ``evaluate`` scores: a split of ``data``, or the run's validation faces."""
    if canonical_split(split) == "Validation" and "Validation" not in data.split_names():
        return _validation_faces(run, data)
    faces = data.split(split)
    return faces.subset(faces.labelled)


def _config_fields(config: dict) -> dict:
    """The TrainConfig keys of a run folder's config (without its own notes: kind, label, ...)."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in config.items() if k in names}


def ensemble_config(config: TrainConfig, member_ids: list[str]) -> dict:
    """An ensemble's config: what its id hashes (with the data fingerprint)."""
    return {
        "kind": "ensemble",
        "members": list(member_ids),
        "base": config.to_dict(),
        "label": f"ensemble x{len(member_ids)} {config.model.arch}" + ("" if config.resample else " (all faces)"),
    }


def member_ids(config: TrainConfig, members: int, fingerprint: str) -> list[str]:
    """The run ids of a bagging ensemble's members, before any is trained."""
    return [RunStore.run_id(_bootstrap(config, i).to_dict(), fingerprint) for i in range(members)]


def _write_ensemble(path: Path, cfg: dict, runs: list[Run], keep: dict | None = None) -> None:
    """An ensemble's predictions and metrics, combined from its members' stored predictions."""
    member_preds = [r.predictions() for r in runs]
    weights = [r.metrics["val"]["accuracy"] for r in runs]
    preds: dict[str, np.ndarray] = {}
    report: dict = {"rules": {}, "members": cfg["members"], "weights": weights}
    for key in ("val", "test"):
        if f"{key}_probs" not in member_preds[0]:
            continue
        y = member_preds[0][f"{key}_y"]
        preds.update({f"{key}_y": y, f"{key}_ids": member_preds[0][f"{key}_ids"]})
        for rule in ENSEMBLE_RULES:
            scores = combine([p[f"{key}_probs"] for p in member_preds], rule, weights)
            preds[f"{key}_probs_{rule}"] = scores
            report["rules"].setdefault(rule, {})[key] = metrics(y, scores)
        preds[f"{key}_probs"] = preds[f"{key}_probs_average"]
        report[key] = report["rules"]["average"][key]
    _save_npz(path / "predictions.npz", preds)
    _write_ensemble_history(path, runs)
    report.update(
        params={k: sum(r.metrics["params"][k] for r in runs) for k in ("trainable", "non_trainable")},
        train_seconds=sum(r.metrics["train_seconds"] for r in runs),
        hardware=runs[0].metrics["hardware"],
        data=runs[0].metrics["data"],
        finished=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    report.update(keep or {})
    write_text_atomic(path / "metrics.json", json.dumps(report, indent=2))


def _accuracies(report: dict) -> dict[str, float]:
    """The headline accuracies of a metrics report (val, test, test with TTA)."""
    return {key: report[key]["accuracy"] for key in ("val", "test", "test_tta") if key in report}


def _bootstrap(config: TrainConfig, member: int) -> TrainConfig:
    """Member ``member``'s config. A deep ensemble's member 0 trains with seed
    ``seed + 0`` on every face: exactly the plain run of ``config``, so it *is* that
    run (a finished ``train`` of the same flags becomes member 0, not trained twice)."""
    if member == 0 and not config.resample:
        return replace(config, resample=True, bootstrap=None)
    return replace(config, bootstrap=member)


class RunBusy(ValueError):
    """Another process is training this run now."""


TRAINING_LOCK = ".training.lock"


@contextlib.contextmanager
def _training_lock(path: Path, wait: float = 2.0) -> Iterator[None]:
    """Held while a process trains the run in ``path``: a second writer (two students
    starting the same run, the CLI beside the dashboard) is refused, not interleaved.

    An OS file lock (``filelock``), so it goes with the process: a killed training
    leaves no stale lock, and its run resumes at once. ``wait``: a trainer waits a
    moment, since a dashboard's probe (``training_now``) may hold the lock briefly.
    """
    lock = FileLock(path / TRAINING_LOCK)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise RunBusy(f"run {path.name} is being trained by another process now ({path / TRAINING_LOCK})") from None
    try:
        yield
    finally:
        lock.release()


def training_now(path: Path) -> bool:
    """Whether some process holds the training lock of the run in ``path``."""
    try:
        with _training_lock(path, wait=0):
            return False
    except RunBusy:
        return True


def _report_split(data: FaceDataset) -> FaceDataset | None:
    if canonical_split(REPORT_SPLIT) not in set(data.splits.tolist()):
        return None
    test = data.split(REPORT_SPLIT)
    test = test.subset(test.labelled)
    return test if len(test) else None


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _write_ensemble_history(path: Path, runs: list[Run]) -> None:
    """The members' mean curve, so the ensemble plots beside single runs."""
    histories = [r.curve().drop(columns="compute", errors="ignore") for r in runs]  # numbers only
    n = min(len(h) for h in histories)
    mean = sum(h.iloc[:n].reset_index(drop=True) for h in histories) / len(histories)
    mean["epoch"] = range(1, n + 1)
    write_text_atomic(path / "history.csv", mean.to_csv(index=False))


class _Ticker:
    """Passes ticks on, and writes ``progress.json`` (at most once a second) so
    another process -- the dashboard -- can follow a background training."""

    def __init__(self, path: Path, downstream: ProgressFn | None):
        self.path, self.downstream, self.last = path, downstream, 0.0

    def __call__(self, tick: Progress) -> None:
        if self.downstream is not None:
            self.downstream(tick)
        now = time.monotonic()
        if now - self.last >= 1.0 or tick.batch == tick.batches:
            self.last = now
            state = {"epoch": tick.epoch, "epochs": tick.epochs, "batch": tick.batch, "batches": tick.batches,
                     "logs": {k: float(v) for k, v in tick.logs.items()}, "time": time.time()}
            write_text_atomic(self.path / "progress.json", json.dumps(state))
