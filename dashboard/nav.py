"""The app's pages in one table: ``Home.py`` builds the menu from it, pages link with it.

Page scripts live in the top-level ``pages/`` folder (not next to ``Home.py``,
so Streamlit's automatic ``pages/`` discovery stays off and ``st.navigation``
alone decides the menu); they are named by absolute path, which works however
the server was started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import streamlit as st
from streamlit.navigation.page import StreamlitPage

ROOT = Path(__file__).resolve().parent.parent
PAGES_DIR = ROOT / "pages"

EXPLAIN_KEY = "explain_image"  # {"image": (48, 48) uint8, "label": int (-1: unknown), "source": str}


@dataclass(frozen=True)
class PageInfo:
    file: str
    title: str
    icon: str
    section: str  # menu heading; "" for none


PAGES: tuple[PageInfo, ...] = (
    PageInfo("home.py", "Home", ":material/home:", ""),
    PageInfo("data.py", "Data", ":material/photo_library:", "Data and training"),
    PageInfo("train.py", "Train", ":material/model_training:", "Data and training"),
    PageInfo("curves.py", "Curves", ":material/show_chart:", "Results"),
    PageInfo("confusion.py", "Confusion", ":material/grid_on:", "Results"),
    PageInfo("explain.py", "Explain", ":material/visibility:", "Explanations"),
    PageInfo("trust.py", "Which method to trust?", ":material/verified:", "Explanations"),
    PageInfo("filters.py", "Filters", ":material/filter_vintage:", "Explanations"),
)


def page_path(file: str) -> str:
    """Absolute path of a page script, as ``st.Page``, ``st.page_link`` and ``st.switch_page`` take it."""
    return str(PAGES_DIR / file)


def navigation() -> StreamlitPage:
    """The menu, grouped by section, with Home as the default page."""
    sections: dict[str, list[StreamlitPage]] = {}
    for page in PAGES:
        sections.setdefault(page.section, []).append(
            st.Page(page_path(page.file), title=page.title, icon=page.icon, default=page.file == "home.py")
        )
    return st.navigation(sections)


def stop_without_runs(message: str = "No finished runs yet: train one first.") -> NoReturn:
    """Stop a page that needs a trained run, pointing the user to Train instead."""
    st.info(message)
    st.page_link(page_path("train.py"), label="Go to Train", icon=":material/model_training:")
    st.stop()


def open_page(file: str) -> NoReturn:
    st.switch_page(page_path(file))


def send_to_explain(image: np.ndarray, label: int, source: str) -> NoReturn:
    """Hand one face to the Explain page: a private copy, so the shared data set stays untouched."""
    st.session_state[EXPLAIN_KEY] = {"image": np.array(image, dtype=np.uint8), "label": int(label), "source": source}
    open_page("explain.py")
