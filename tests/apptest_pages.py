"""Opening a dashboard page in Streamlit's AppTest, shared by the page tests."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

HOME = str(Path(__file__).resolve().parent.parent / "dashboard" / "Home.py")
TIMEOUT = 180  # seconds per script run: TensorFlow work on a busy 2-core machine


def open_page(file: str, session: dict | None = None) -> AppTest:
    """Home, then ``pages/<file>`` via switch_page, with ``session`` state set first."""
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    for key, value in (session or {}).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    if file != "home.py":
        at.switch_page(f"../pages/{file}").run()
        assert not at.exception, at.exception
    return at
