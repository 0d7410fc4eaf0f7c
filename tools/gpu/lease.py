"""One lease of a lent GPU machine: train several FER2013 runs side by side, pack them, send them back.

The lease is short (15 minutes of device time, 10 a command, machine start
included), so one command does it all, with the ``python -m core`` CLI under
Keras' JAX backend (the machine has JAX and PyTorch, no TensorFlow):

1. the FER2013 bundle (``bundle.py``) becomes a CSV again;
2. calibration: the first job alone for 2 epochs. Its first epoch holds XLA's
   compilation (21 s for ``ferlab-wide`` without augmentation on an H200; with
   the affine layers' default bilinear resampling it did not end within 40 s,
   which is why every job resamples ``--interpolation nearest``); the second
   gives the time an epoch, from which the number of epochs that fits the lease
   is set. If it does not get there, it is tried once more without the affine
   layers (flip and erasing only). Its compilation lands in JAX's persistent
   cache, which the jobs of the same config (ensemble members) then reuse;
3. every job trains that many epochs at once (``--slowdown``: how much slower an
   epoch gets with all of them sharing the GPU); at ``--train-end`` the late
   ones are interrupted and their best epoch so far is kept (``core snapshot``);
4. every finished run is packed with int8 kernels (``core pack``: it measures
   what that costs) and the run folders go back through OUT as one tar, split
   below the tool's 16 MiB a file.

Here, once: the bundle, and the wheels the machine lacks, in the ignored .gpu/:
    python tools/gpu/bundle.py pack ../shared/fer2013/fer2013.csv.gz .gpu
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/whl keras==3.15.1 namex optree
The working tree travels too (64 MiB in all): untrack what the lease does not
need (models/, checkpoints/, core/weights/) for the call, then `git reset`.
Then the device command, from the repository root on the machine:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl &&
    PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax python3 tools/gpu/lease.py $OUT --bundle .gpu
A dry run on a CPU (tiny model, a few hundred faces):
    KERAS_BACKEND=jax python tools/gpu/lease.py /tmp/out --bundle .gpu --model tiny --rows 600 --no-bf16 \\
        --cal-deadline 600 --train-end 900 --max-epochs 3
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

T0 = time.time()
CSV = "/tmp/fer2013.csv"
LOGS = Path("/tmp/lease-logs")
NO_AFFINE = "--rotation 0 --shear 0 --shift 0 --zoom 0".split()


def say(*parts) -> None:
    print(f"[{time.time() - T0:6.1f}s]", *parts, flush=True)


def jobs(model: str, bf16: bool, extra: list[str]) -> dict[str, list[str]]:
    """The runs of a lease: 4 deep-ensemble members of the shipped recipe, and
    two single runs that each change one thing (stronger shift and zoom; SGD).
    ``extra``: flags for every job, last, so they win (e.g. lighter augmentation)."""
    common = f"--model {model} --schedule cosine --warmup 2 --label-smoothing 0.1 --erasing 0.5".split()
    common += ["--interpolation", "nearest"] + (["--bf16"] if bf16 else [])
    adamw = [*common, *"--optimizer adamw --lr 1e-3 --weight-decay 0.05".split()]
    todo = {
        **{f"m{k}": ["ensemble", "--members", "4", "--no-resample", "--member", str(k), *adamw] for k in range(4)},
        "aug": ["train", *adamw, "--shift", "0.2", "--zoom", "0.2"],
        "sgd": ["train", *common, *"--optimizer sgd --lr 0.01 --weight-decay 5e-4".split()],
    }
    return {name: [*args, *extra] for name, args in todo.items()}


def launch(todo: dict[str, list[str]], runs: str, epochs: int, tag: str) -> dict[str, subprocess.Popen]:
    procs = {}
    for name, args in todo.items():
        log = open(LOGS / f"{tag}-{name}.log", "w")
        cmd = [sys.executable, "-m", "core", *args, "--epochs", str(epochs), "--data", CSV, "--runs", runs]
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    say(tag, "launched", ", ".join(todo), "x", epochs, "epochs")
    return procs


def wait(procs: dict[str, subprocess.Popen], deadline: float) -> None:
    """Until all end or ``deadline`` (seconds since start); then Ctrl-C the rest (they
    keep every finished epoch)."""
    while any(p.poll() is None for p in procs.values()) and time.time() - T0 < deadline:
        time.sleep(2)
    for name, p in procs.items():
        if p.poll() is None:
            say("interrupting", name)
            p.send_signal(signal.SIGINT)
    for p in procs.values():
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def log_tail(name: str, chars: int = 600) -> str:
    return (LOGS / f"{name}.log").read_text(errors="replace")[-chars:].replace("\r", "\n")


def gpu_state() -> None:
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,memory.used,utilization.gpu", "--format=csv,noheader"])


def calibrate(first: dict[str, list[str]], deadline: float) -> tuple[float, float] | None:
    """(first epoch, second epoch) seconds of the first job alone, or None if it did not get there."""
    shutil.rmtree("/tmp/calib", ignore_errors=True)
    wait(launch(first, "/tmp/calib", 2, "cal"), deadline)
    for history in glob.glob("/tmp/calib/*/history.csv"):
        seconds = pd.read_csv(history)["seconds"]
        if len(seconds) >= 2:
            return float(seconds[0]), float(seconds[1])
    say(log_tail(f"cal-{next(iter(first))}", 2000))
    return None


def core_side_by_side(commands: dict[str, list[str]], deadline: float) -> None:
    """``python -m core`` commands at once (each loads the data and compiles its own predictions)."""
    procs = {key: subprocess.Popen([sys.executable, "-m", "core", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True) for key, args in commands.items()}
    for key, p in procs.items():
        try:
            out, _ = p.communicate(timeout=max(deadline - (time.time() - T0), 1))
        except subprocess.TimeoutExpired:
            p.kill()
            out = "(killed at the deadline)"
        say(commands[key][0], key, p.returncode, out.strip()[-300:])


def finish(runs: Path, deadline: float) -> None:
    """Snapshot the interrupted runs, then pack every finished one with int8 kernels,
    all side by side: one by one they would outlast the command."""
    late = [f for f in sorted(runs.iterdir()) if (f / "config.json").exists() and not (f / "metrics.json").exists()]
    core_side_by_side({f.name: ["snapshot", str(f), "--data", CSV, "--runs", str(runs)] for f in late}, deadline - 60)
    for folder in late:
        shutil.move(str(folder), f"/tmp/unfinished-{folder.name}")  # last.keras is too big to send back
    finished = sorted(f.name for f in runs.iterdir() if (f / "metrics.json").exists())
    core_side_by_side({run: ["pack", "--int8", run, "--data", CSV, "--runs", str(runs)] for run in finished}, deadline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the tool's $OUT: what is written there comes back")
    parser.add_argument("--bundle", type=Path, default=Path(".gpu"), help="bundle.py's folder")
    parser.add_argument("--model", default="ferlab-wide")
    parser.add_argument("--no-bf16", action="store_true", help="float32 (a dry run on a CPU without native bfloat16)")
    parser.add_argument("--rows", type=int, help="a dry run: this many faces of each end of the data set")
    parser.add_argument("--cal-deadline", type=float, default=300, help="seconds from start the calibration may take")
    parser.add_argument("--train-end", type=float, default=440, help="seconds from start when training must end")
    parser.add_argument("--pack-end", type=float, default=540,
                        help="seconds from start when packing must end (the command's limit is 600, the tar follows)")
    parser.add_argument("--max-epochs", type=int, default=150)
    parser.add_argument("--flags", default="",
                        help="more train flags for every job, e.g. '--rotation 0 --shear 0' (the affine augmentation "
                             "layers are what JAX is slow to compile and run)")
    parser.add_argument("--slowdown", type=float, default=2.0,
                        help="an epoch's time with every job on the GPU, over its time alone")
    args = parser.parse_args()
    LOGS.mkdir(exist_ok=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/jax-cache")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the jobs share the GPU's memory
    sys.path.insert(0, str(Path(__file__).parent))
    from bundle import unpack

    say("faces", unpack(args.bundle, Path(CSV), args.rows))
    todo = jobs(args.model, not args.no_bf16, args.flags.split())
    times = calibrate(dict(list(todo.items())[:1]), args.cal_deadline)
    if times is None:
        say("calibration failed: again without the affine augmentation layers")
        todo = jobs(args.model, not args.no_bf16, [*args.flags.split(), *NO_AFFINE])
        times = calibrate(dict(list(todo.items())[:1]), time.time() - T0 + args.cal_deadline / 2)
    if times is None:
        say("calibration failed")
        return 1
    compile_s = times[0] - times[1]
    per_epoch = times[1] * args.slowdown + 1.5  # + saving two checkpoints
    budget = args.train_end - (time.time() - T0) - compile_s - 20
    epochs = int(min(args.max_epochs, max(3, budget // per_epoch)))
    say(f"backend {os.environ.get('KERAS_BACKEND')}: epoch 1 {times[0]:.1f}s, epoch 2 {times[1]:.1f}s alone -> {epochs} epochs")
    procs = launch(todo, "/tmp/runs", epochs, "run")
    time.sleep(min(90, max(args.train_end - (time.time() - T0), 0)))
    gpu_state()
    wait(procs, args.train_end)
    for name in todo:
        say(name, log_tail(f"run-{name}", 300))
    finish(Path("/tmp/runs"), args.pack_end)
    subprocess.run(f"tar cf - -C /tmp runs | split -b 15m - {args.out}/runs.tar.", shell=True, check=True)
    say("sent", sorted(os.listdir(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
