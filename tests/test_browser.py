"""The app in a real browser: a Streamlit server, driven by Debian's headless Chromium via Playwright.

AppTest runs page scripts in-process and never renders anything; this test
catches what only a browser shows: the file upload round trip, page switches
through the menu, the front end's own exceptions. It uploads a photo with two
faces on Home, sends one to Explain, then opens every page from the menu, and
saves a screenshot of each under ``test-output/screenshots/`` (git-ignored)
for a human to look at. Every wait is bounded.

Chromium is Debian's ``/usr/bin/chromium`` (``apt-get install chromium``),
never a Playwright browser download; without it the test is skipped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dashboard.nav import PAGES

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-output" / "screenshots"
START_SECONDS = 90  # server start: Python, Streamlit, then TensorFlow on the first page
RUN_MS = 180_000  # one script run at most (the first photo loads TensorFlow and the face detector)
WIDTH, HEIGHT = 1400, 1000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(dashboard_runs, tmp_path_factory):
    """A Streamlit server on a free port over the test run store; stopped (its process group) afterwards."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    env = {**os.environ, "FERLAB_SHIPPED": "0", "FERLAB_RUNS": str(dashboard_runs.root), "FERLAB_VIS_STEPS": "20", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "streamlit", "run", "dashboard/Home.py", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.read() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(timeout=15)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """scikit-image's astronaut twice, side by side: a JPEG photo with two real faces."""
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "two_astronauts.jpg"
    Image.fromarray(np.hstack([data.astronaut()] * 2)).save(path, quality=90)
    return path


def settle(page) -> None:
    """Wait until the script run has finished (the app root carries the run state)."""
    page.wait_for_timeout(300)  # a run triggered just now may not have been announced yet
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=RUN_MS)
    page.locator('[data-testid="stSpinner"]').first.wait_for(state="detached", timeout=RUN_MS)


def check_and_shoot(page, name: str) -> None:
    """No exception or error box on the page; then a screenshot of the whole page."""
    exceptions = page.locator('[data-testid="stException"]')
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert exceptions.count() == 0, exceptions.all_inner_texts()
    assert errors.count() == 0, errors.all_inner_texts()
    # The main area scrolls inside the window: grow the window to the content for one full picture.
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": int(min(max(height, HEIGHT), 12_000))})
    page.wait_for_timeout(800)  # charts re-layout to the new size
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})


def heading(page, text: str):
    return page.locator("h1").filter(has_text=text)


@pytest.mark.timeout(900)
def test_photo_to_explanation_and_every_page_in_a_real_browser(app_url, photo):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.set_default_timeout(RUN_MS)
            page.goto(app_url, timeout=RUN_MS)
            page.get_by_text("Try a photo of your own").wait_for()
            settle(page)
            check_and_shoot(page, "01_home")

            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
            page.get_by_text("2 faces found, numbered left to right").wait_for()
            page.get_by_role("button", name="Explain this face").wait_for()
            settle(page)
            assert page.locator('[data-testid="stPlotlyChart"]').count() == 1
            assert page.get_by_text("face 2").count() >= 1  # the predictions table and the face picker
            check_and_shoot(page, "02_home_photo")

            page.get_by_role("button", name="Explain this face").click()
            heading(page, "Explain").wait_for()
            page.get_by_text("needs convolutional feature maps").wait_for()  # the DNN's Grad-CAM cell
            settle(page)
            captions = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
            assert captions.count("LIME") == 3 and captions.count("Grad-CAM") == 2, captions
            check_and_shoot(page, "03_explain_photo_face")

            nav = page.locator('[data-testid="stSidebarNav"]')
            for number, info in enumerate(PAGES, start=4):
                nav.get_by_role("link", name=info.title, exact=True).click()
                heading(page, "FER Lab" if info.file == "home.py" else info.title).wait_for()
                settle(page)
                check_and_shoot(page, f"{number:02d}_{info.file.removesuffix('.py')}")
        finally:
            browser.close()
