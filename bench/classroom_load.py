"""A classroom at once: N students upload a face and open its explanation on ONE FER Lab server.

    python bench/classroom_load.py                     # 30 sessions, a tiny run trained into a temp store
    python bench/classroom_load.py --sessions 10 --ramp 2
    python bench/classroom_load.py --runs runs/        # an existing run store (shipped models left out)
    python bench/classroom_load.py --shipped           # the shipped models (models/), plus --runs if given
    python bench/classroom_load.py --same-photo        # every student uploads the same bytes (caches hit)

Why: a teacher starts one Streamlit server and a class of ~30 opens it in the
same minute. Every session runs its own script reruns on the server's one
Python process (TensorFlow releases the GIL only inside its kernels), so the
question is how long a student waits when everybody clicks together, and
whether anything breaks (exception boxes, error boxes, waits that never end).

How: the server is started once (``streamlit run dashboard/Home.py`` on a free
port, its own process group, killed at the end whatever happens) over a run
store: by default one ``python -m core train --model tiny --epochs 1`` run in a
temp dir with the shipped models left out (``FERLAB_SHIPPED=0``). Debian's
``/usr/bin/chromium`` (never a Playwright browser download) is launched once
with one browser context per session; the sessions run concurrently with
asyncio, started ``--ramp`` seconds apart. Each session:

1. open     -- load Home until its script run has finished;
2. upload   -- upload a face photo, until the prediction table and the
               "Explain this face" button are shown and the run has finished;
3. explain  -- click "Explain this face", until the Explain page has drawn
               its maps (a LIME caption) and the run has finished.

The photo is scikit-image's astronaut (one real face, 512x512 PNG, made in
memory). By default each session's copy is a few grey levels brighter or
darker than the others, so every student's face is a different image and the
server's caches (photo, predictions, maps: keyed by content) do not answer for
the others, as with a real class; ``--same-photo`` measures the cached case.

Every wait is bounded (``--timeout``, 300 s by default); a step that runs out
counts as a timeout and ends that session. After each step the page is
searched for exception and error elements. Output: a markdown table of p50,
p95 and max per step and for the whole flow, with error counts, then totals.

Caveat, printed with the results: the browser runs on the same machine as the
server. N Chromium pages (each rendering Plotly charts and images) compete
with the server for the CPU, so on a small machine the latencies measured here
are worse than students on their own laptops would see. Use fewer
``--sessions`` or a larger ``--ramp`` to see how the server alone scales.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_SECONDS = 120  # server start: Python and Streamlit (TensorFlow loads on the first photo)
STEPS = ["open", "upload", "explain"]
VIEWPORT = {"width": 1280, "height": 900}


# ------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_tiny_run(runs: Path) -> None:
    """One tiny CNN, one epoch on the demo set: what it learned does not matter here."""
    print(f"Training a tiny run into {runs} …", flush=True)
    command = [sys.executable, "-m", "core", "train", "--model", "tiny", "--epochs", "1", "--runs", str(runs)]
    done = subprocess.run(command, cwd=ROOT, timeout=600, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"training the tiny run failed:\n{(done.stdout + done.stderr)[-3000:]}")


def start_server(runs: Path | None, shipped: bool, log_path: Path) -> tuple[subprocess.Popen, str]:
    """A Streamlit server on a free port in its own process group; returns once it answers its health check."""
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if runs is not None:
        env["FERLAB_RUNS"] = str(runs)
    if not shipped:
        env["FERLAB_SHIPPED"] = "0"
    command = [sys.executable, "-m", "streamlit", "run", "dashboard/Home.py", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read() == b"ok":
                    return server, url
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"the server did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group, SIGKILL if it lingers."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ photo


def face_photos(n: int, same: bool) -> list[bytes]:
    """The astronaut as PNG bytes, one per session; each a few grey levels apart unless ``same``."""
    from skimage import data

    base = data.astronaut().astype(np.int16)
    photos = []
    for i in range(n):
        shift = 0 if same else i - n // 2
        buffer = io.BytesIO()
        Image.fromarray(np.clip(base + shift, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        photos.append(buffer.getvalue())
    return photos


# ------------------------------------------------------------------ sessions


@dataclass
class SessionResult:
    times: dict[str, float] = field(default_factory=dict)  # step -> seconds, finished steps only
    timeout: str | None = None  # the step that ran out of time
    failure: str | None = None  # the step that failed otherwise (one line)
    errors: dict[str, list[str]] = field(default_factory=dict)  # step -> exception / error box texts


async def settle(page, timeout_ms: float) -> None:
    """Until the script run has finished and no spinner is left."""
    await page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=timeout_ms)
    await page.locator('[data-testid="stSpinner"]').first.wait_for(state="detached", timeout=timeout_ms)


async def page_errors(page) -> list[str]:
    """Texts of Streamlit's exception and error elements on the page."""
    found = []
    for selector in ('[data-testid="stException"]', '[data-testid="stAlertContentError"]'):
        found += [text.strip().splitlines()[0][:200] if text.strip() else selector
                  for text in await page.locator(selector).all_inner_texts()]
    return found


async def one_session(browser, url: str, photo: bytes, delay: float, timeout_s: float) -> SessionResult:
    """Open Home, upload ``photo``, explain the face; every step timed and bounded."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    await asyncio.sleep(delay)
    result = SessionResult()
    timeout_ms = timeout_s * 1000
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.set_default_timeout(timeout_ms)

    async def open_home() -> None:
        await page.goto(url, timeout=timeout_ms)
        await page.get_by_text("Try a photo of your own").wait_for()
        await settle(page, timeout_ms)

    async def upload() -> None:
        await page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            {"name": "astronaut.png", "mimeType": "image/png", "buffer": photo})
        await page.get_by_role("button", name="Explain this face").wait_for()  # drawn right after the table
        await settle(page, timeout_ms)

    async def explain() -> None:
        await page.get_by_role("button", name="Explain this face").click()
        await page.locator("h1").filter(has_text="Explain").wait_for()
        await page.locator('[data-testid="stImageCaption"]').filter(has_text="LIME").first.wait_for()
        await settle(page, timeout_ms)

    step = STEPS[0]
    try:
        for step, action in zip(STEPS, (open_home, upload, explain)):
            start = time.perf_counter()
            await action()
            result.times[step] = time.perf_counter() - start
            errors = await page_errors(page)
            if errors:
                result.errors[step] = errors
    except PlaywrightTimeout:
        result.timeout = step
    except Exception as err:  # a crashed page or a closed connection: count it, keep the others going
        result.failure = f"{step}: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    finally:
        await context.close()
    return result


async def run_class(url: str, photos: list[bytes], ramp: float, timeout_s: float) -> list[SessionResult]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*(one_session(browser, url, photo, i * ramp, timeout_s)
                                          for i, photo in enumerate(photos)))
        finally:
            await browser.close()


# ------------------------------------------------------------------ report


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def report(results: list[SessionResult], wall: float, server_cpu: float | None, args: argparse.Namespace) -> str:
    def row(name: str, seconds: list[float], errors: int, timeouts: int, failures: int) -> str:
        if seconds:
            p50, p95, top = (f"{v * 1000:,.0f}" for v in (statistics.median(seconds), percentile(seconds, 95), max(seconds)))
        else:
            p50 = p95 = top = "—"
        return f"| {name} | {len(seconds)} | {p50} | {p95} | {top} | {errors} | {timeouts} | {failures} |"

    lines = [f"### {len(results)} sessions, ramp {args.ramp:g} s, {'same photo' if args.same_photo else 'distinct photos'}, "
             f"{os.cpu_count()} CPU cores", "",
             "| step | done | p50 ms | p95 ms | max ms | sessions with error elements | timeouts | other failures |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for step in STEPS:
        lines.append(row(step, [r.times[step] for r in results if step in r.times],
                         sum(step in r.errors for r in results), sum(r.timeout == step for r in results),
                         sum(bool(r.failure) and r.failure.startswith(step) for r in results)))
    complete = [r for r in results if len(r.times) == len(STEPS)]
    lines.append(row("**whole flow**", [sum(r.times.values()) for r in complete],
                     sum(bool(r.errors) for r in results), sum(r.timeout is not None for r in results),
                     sum(r.failure is not None for r in results)))
    clean = sum(not r.errors for r in complete)
    lines += ["", f"Totals: {len(complete)}/{len(results)} sessions completed the flow, {clean} of them without any "
              f"exception or error element; wall time {wall:,.1f} s from first session start to last session end."]
    if server_cpu is not None:
        lines.append(f"Server process: {server_cpu:,.1f} CPU s during the sessions, i.e. {server_cpu / wall:.2f} of "
                     f"{os.cpu_count()} cores on average.")
    texts = sorted({f"{step}: {text}" for r in results for step, found in r.errors.items() for text in found})
    texts += sorted({r.failure for r in results if r.failure})
    if texts:
        lines += ["", "Distinct errors:"] + [f"- {text}" for text in texts[:20]]
    lines += ["", f"Note: Chromium ({len(results)} pages) ran on this same machine and competed with the server for the "
              f"{os.cpu_count()} cores: students on their own devices would wait less. Try fewer --sessions or a "
              "larger --ramp to separate the server's own scaling from the browser's load."]
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30, help="simultaneous students (default 30)")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds between session starts (default 0: all at once)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds any one wait may take (default 300)")
    parser.add_argument("--runs", type=Path, default=None, help="run store for the server (default: a tiny run trained into a temp dir)")
    parser.add_argument("--shipped", action="store_true", help="keep the shipped models (models/) in the store")
    parser.add_argument("--same-photo", action="store_true", help="every session uploads the same bytes (server caches hit)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"needs Debian's {CHROMIUM} (apt-get install chromium); no browser is downloaded")

    with tempfile.TemporaryDirectory(prefix="classroom_load_") as tmp:
        runs = args.runs
        if runs is None and not args.shipped:
            runs = Path(tmp) / "runs"
            train_tiny_run(runs)
        photos = face_photos(args.sessions, args.same_photo)
        log_path = Path(tmp) / "streamlit.log"
        server, url = start_server(runs, args.shipped, log_path)
        try:
            print(f"Server at {url}; {args.sessions} sessions, ramp {args.ramp:g} s, every wait bounded by {args.timeout:g} s …",
                  flush=True)
            cpu_before = cpu_seconds(server.pid)
            start = time.perf_counter()
            results = asyncio.run(run_class(url, photos, args.ramp, args.timeout))
            wall = time.perf_counter() - start
            cpu_after = cpu_seconds(server.pid)
            server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        finally:
            stop_server(server)
        if any(r.errors or r.failure or r.timeout for r in results):
            print(f"(server log tail)\n{log_path.read_text()[-2000:]}\n")
    print(report(results, wall, server_cpu, args))


if __name__ == "__main__":
    main()
