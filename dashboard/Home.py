"""FER Lab's entry point: ``streamlit run dashboard/Home.py`` from the repo root.

It only sets the page up and hands over to the page the user picked; the
pages themselves are the scripts in ``pages/`` (see ``dashboard.nav``).
"""

import os
import sys
from pathlib import Path

# Streamlit puts this script's folder (dashboard/) on sys.path, not the repo root
# that `core` and `dashboard` are imported from.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out of the server log

import streamlit as st  # noqa: E402

from dashboard import jobs, nav, state  # noqa: E402

st.set_page_config(page_title="FER Lab", page_icon=":material/mood:", layout="wide")
page = nav.navigation()
with st.sidebar:
    store = state.run_store()
    st.caption(f"Data: **{state.current_source().label}**")
    st.caption(f"Runs: **{len(store.list())}** finished · **{len(jobs.active(store))}** training on this server")
page.run()
