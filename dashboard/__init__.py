"""FER Lab's Streamlit dashboard: shared helpers for the page scripts in ``pages/``."""
