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


@pytest.fixture(scope="session")
def dashboard_runs(tmp_path_factory):
    """A run store for the dashboard's explanation tests, trained once per session on the demo
    set: a tiny CNN, a 2-member tiny ensemble and a DNN with the tiny CNN's parameter count
    (1 epoch each: what they learn does not matter here).

    Only the store is made here; each test points $FERLAB_RUNS at it, so tests of other
    stores in the same session never see these runs, nor these tests theirs.
    """
    from types import SimpleNamespace

    from core.data import load_dataset
    from core.models import ModelSpec
    from core.runs import RunStore
    from core.training import TrainConfig

    root = tmp_path_factory.mktemp("dashboard_runs")
    store = RunStore(root, shipped=[])
    data = load_dataset("demo")
    cnn = store.train(TrainConfig(model=ModelSpec("tiny"), epochs=1), data)
    ensemble = store.ensemble(TrainConfig(model=ModelSpec("tiny"), epochs=1), 2, data)
    dnn = store.train(TrainConfig(model=ModelSpec("dnn", dnn_match="tiny"), epochs=1), data)
    return SimpleNamespace(root=root, data=data, cnn=cnn, ensemble=ensemble, dnn=dnn)
