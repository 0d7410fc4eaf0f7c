"""Trainings as background processes: the server launches and watches, never trains.

Training in the server process would freeze the app for the whole class, so
each request becomes ``python -m core train|ensemble ...`` in its own session
(``start_new_session``: a server restart does not kill it), niced, with its
output in ``<store>/jobs/<run id>.log``. The run id is computed *before*
launching, from the same CLI arguments the process gets, so a finished run is
opened instead of retrained and a running one is watched instead of started
twice. ``core`` resumes an interrupted run from its last finished epoch, and
refuses a run that another process is training (``RunBusy``), so "start again"
is always safe.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.__main__ import build_parser, config_from_args
from core.runs import Run, RunStore, ensemble_config, member_ids
from core.training import TrainConfig
from dashboard.state import DataSource

ROOT = Path(__file__).resolve().parent.parent
MAX_JOBS = int(os.environ.get("FERLAB_MAX_JOBS", "2"))  # a class must not start 30 trainings on one CPU


@dataclass(frozen=True)
class Plan:
    """One training request: its CLI arguments and the run ids it will produce."""

    args: tuple[str, ...]  # "train"/"ensemble" and options, without --runs and --data
    config: TrainConfig
    run_id: str
    member_ids: tuple[str, ...]  # an ensemble's members, in training order; () for one model

    @property
    def is_ensemble(self) -> bool:
        return bool(self.member_ids)


def plan(args: list[str], fingerprint: str) -> Plan:
    """Parse ``args`` exactly as the CLI will, and derive the run id(s) from them."""
    parsed = build_parser().parse_args(args)
    config = config_from_args(parsed)
    if parsed.command == "train":
        return Plan(tuple(args), config, RunStore.run_id(config.to_dict(), fingerprint), ())
    members = tuple(member_ids(config, parsed.members, fingerprint))
    return Plan(tuple(args), config, RunStore.run_id(ensemble_config(config, list(members)), fingerprint), members)


@dataclass
class Job:
    plan: Plan
    process: subprocess.Popen
    log: Path


@dataclass(frozen=True)
class Status:
    """Where a plan stands: "finished", "running", "interrupted", "failed" or "new"."""

    state: str
    run: Run | None = None  # the finished run
    training: str | None = None  # id of the run training now (an ensemble's current member)
    tick: dict | None = None  # its last progress.json; None while the process starts up
    members_done: int = 0
    message: str = ""  # why it failed (the end of its log)


class _Registry:
    """This server's training processes, shared by all sessions under one lock,
    so two students pressing "Train" at once start one process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[Path, Job] = {}  # run folder -> job

    def running(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.process.poll() is None]


@st.cache_resource
def _registry() -> _Registry:
    return _Registry()


def status(store: RunStore, plan: Plan) -> Status:
    finished = store.get(plan.run_id)
    if finished is not None and finished.id == plan.run_id:
        return Status("finished", run=finished)
    members_done = sum(store.get(m) is not None for m in plan.member_ids)
    job = _job(store, plan)
    ticks = dict(store.in_progress())
    training = next((i for i in (*plan.member_ids, plan.run_id) if i in ticks), None)
    tick = ticks.get(training) if training else None
    if job is not None and job.process.poll() is None:
        return Status("running", training=training, tick=tick, members_done=members_done)
    if job is not None and job.process.returncode != 0:
        return Status("failed", members_done=members_done, message=_log_tail(job.log))
    if tick is not None:  # started by another server or the CLI: running while its process holds the run's lock
        return Status("running" if tick["alive"] else "interrupted", training=training, tick=tick, members_done=members_done)
    return Status("new", members_done=members_done)


def _job(store: RunStore, plan: Plan) -> Job | None:
    """This server's job for ``plan``: its own, else a running one that trains any of its runs
    (a CNN that is member 0 of someone's ensemble; two ensembles sharing their first members)."""
    jobs = _registry().jobs
    if (own := jobs.get(store.root / plan.run_id)) is not None:
        return own
    ids = {plan.run_id, *plan.member_ids}
    return next((job for folder, job in list(jobs.items()) if folder.parent == store.root
                 and job.process.poll() is None and ids & {job.plan.run_id, *job.plan.member_ids}), None)


def active(store: RunStore) -> dict[str, dict | None]:
    """Trainings going on now, run id -> last progress tick: recent ticks in the store,
    plus this server's processes still starting up (no tick yet)."""
    found: dict[str, dict | None] = {i: t for i, t in store.in_progress() if t["alive"]}
    for folder, job in list(_registry().jobs.items()):
        ids = (job.plan.run_id, *job.plan.member_ids)
        starting = not any(i in found for i in ids) and not (folder / "metrics.json").exists()  # not yet / no longer ticking
        if folder.parent == store.root and job.process.poll() is None and starting:
            found[job.plan.run_id] = None
    return found


class Busy(RuntimeError):
    """Too many trainings already run on this server."""


def launch(store: RunStore, plan: Plan, source: DataSource, upload: bytes | None = None) -> None:
    """Start ``plan`` in a background process unless it is finished or already running."""
    registry = _registry()
    with registry.lock:
        if status(store, plan).state in ("finished", "running"):
            return
        if len(registry.running()) >= MAX_JOBS:
            raise Busy(f"{MAX_JOBS} trainings are already running on this server; try again when one has finished.")
        logs = store.root / "jobs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{plan.run_id}.log"
        command = [*_nice(), sys.executable, "-m", "core", *plan.args, "--runs", str(store.root), "--data", data_argument(store, source, upload)]
        with open(log, "w") as out:
            out.write(" ".join(command) + "\n")
            out.flush()
            process = subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        registry.jobs[store.root / plan.run_id] = Job(plan, process, log)


def data_argument(store: RunStore, source: DataSource, upload: bytes | None) -> str:
    """What ``--data`` the process gets. An upload lives only in memory, so it is
    written (atomically: temp file, then rename) to ``<store>/uploads/<digest>/<name>``;
    keeping its name keeps the face ids ('name.csv:line 12') equal to the dashboard's."""
    if source.kind != "upload":
        return source.ref
    if upload is None:
        raise ValueError("an uploaded source needs its bytes")
    target = store.root / "uploads" / source.digest / source.ref
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(upload)
        os.replace(tmp, target)
    return str(target)


def _nice() -> list[str]:
    """Lower the training's CPU priority so page loads stay fast while it runs."""
    nice = shutil.which("nice")
    return [nice, "-n", "10"] if nice else []


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
