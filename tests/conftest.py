"""Shared fixtures: tiny generated data only (never ../shared), quiet TensorFlow."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("FERLAB_VIS_STEPS", "8")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_small():
    """280 demo faces: 30 per class for training, 10 per class for PublicTest."""
    from core.demo import make_demo

    return make_demo(n_per_class=30, test_per_class=10, seed=1)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """An empty run store; shipped models are left out so tests see only their own runs."""
    root = tmp_path / "runs"
    monkeypatch.setenv("FERLAB_RUNS", str(root))
    return root
