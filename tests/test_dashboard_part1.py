"""Dashboard pages (part 1) driven with Streamlit's AppTest, on the demo set.

A tiny run and a 2-member tiny ensemble are trained once per session into a
temporary run store; every page is opened through ``dashboard/Home.py`` and
``switch_page``, as a browser would. Only ``test_train_page_runs_a_training_
in_the_background`` starts a real training process (1 epoch, bounded wait).
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from apptest_pages import open_page
from streamlit.testing.v1 import AppTest

import core.runs
from core.data import EMOTIONS, load_dataset
from core.models import ModelSpec
from core.runs import RunStore
from core.training import TrainConfig

SHIPPED_ROOTS = core.runs.shipped_roots  # the real one, before any fixture patches it

TINY = TrainConfig(model=ModelSpec("tiny"), epochs=2)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A run store with one tiny run and one tiny ensemble (2 members) on the demo set."""
    root = tmp_path_factory.mktemp("runs")
    patch = pytest.MonkeyPatch()
    patch.setenv("FERLAB_RUNS", str(root))
    patch.setattr(core.runs, "shipped_roots", lambda: [])  # only this session's runs
    data = load_dataset("demo")
    store = RunStore(root)
    single = store.train(TINY, data)
    ensemble = store.ensemble(TINY, 2, data)
    yield SimpleNamespace(root=root, data=data, store=store, single=single, ensemble=ensemble)
    patch.undo()


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by widget key: {key: figure JSON}."""
    found = {}
    for element in at.get("plotly_chart"):
        found[element.key] = json.loads(element.proto.spec)
    return found


def table(at: AppTest, column: str):
    """The first table on the page with that column (tables have no keys in AppTest)."""
    return next(t.value for t in at.dataframe if column in t.value.columns)


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "warning", "error") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


# ------------------------------------------------------------------- home


def test_home_shows_data_runs_best_models_and_guide(lab):
    at = open_page("home.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Faces loaded"] == f"{len(lab.data):,}"
    assert metrics["Finished runs"] == "4"  # the run, the ensemble and its 2 members
    best = table(at, "val accuracy")
    assert sorted(best["kind"]) == ["ensemble x2", "single"]  # the ensemble's members left out
    assert len(at.page_link) == 7  # every page but Home
    assert "home_train_demo" not in [b.key for b in at.button]  # runs exist: no first-start offer


def test_home_offers_a_demo_training_on_first_start(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_RUNS", str(tmp_path / "empty"))
    monkeypatch.setattr(core.runs, "shipped_roots", lambda: [])
    at = open_page("home.py")
    assert {m.label: m.value for m in at.metric}["Finished runs"] == "0"
    assert at.button(key="home_train_demo").label == "Train a demo model (~30 s)"


# ------------------------------------------------------------------- data


def test_data_page_shows_counts_distribution_samples_and_one_face(lab):
    at = open_page("data.py")
    figures = charts(at)
    assert len(figures["data_distribution"]["data"]) == 2  # PublicTest and Training
    assert figures["data_samples"]["layout"]["yaxis"]["ticktext"][3].startswith("Happy")
    counts = table(at, "total")
    assert counts.loc["Training", "total"] == int((lab.data.splits == "Training").sum())
    assert list(counts.columns[:7]) == list(EMOTIONS)
    at.number_input(key="data_face_index").set_value(5).run()
    assert f"id `{lab.data.split(at.selectbox(key='data_face_split').value).ids[5]}`" in texts(at)
    at.button(key="data_explain").click().run()
    assert not at.exception
    face = at.session_state["explain_image"]
    assert face["image"].shape == (48, 48) and face["image"].dtype == np.uint8
    assert at.title[0].value == "Explain"  # landed on the Explain page


def test_data_page_reports_bad_path_and_bad_csv_and_keeps_the_data(lab, tmp_path):
    at = open_page("data.py")
    at.radio(key="data_source_kind").set_value("path").run()
    at.text_input(key="data_source_path").input(str(tmp_path / "missing.csv")).run()
    at.button(key="data_source_load").click().run()
    assert not at.exception
    assert "no such file" in at.error[0].value
    assert "built-in demo set" in texts(at)  # still using the demo set

    at.radio(key="data_source_kind").set_value("upload").run()
    bad = b"emotion,pixels,Usage\n3," + b"1 " * 10 + b",Training\n"
    at.file_uploader(key="data_source_upload").upload("bad.csv", bad, "text/csv").run()
    assert not at.exception
    assert "bad.csv: line 2, field 'pixels'" in at.error[0].value
    assert "built-in demo set" in texts(at)


def test_data_page_loads_an_uploaded_csv(lab):
    rows = "\n".join(f"{i % 7},{' '.join(['128'] * 2304)},Training" for i in range(14))
    at = open_page("data.py")
    at.radio(key="data_source_kind").set_value("upload").run()
    at.file_uploader(key="data_source_upload").upload("mine.csv", f"emotion,pixels,Usage\n{rows}\n".encode(), "text/csv").run()
    assert not at.exception
    assert "uploaded mine.csv" in texts(at) and "14 faces" in texts(at)


# ------------------------------------------------------------------ train


def _set_train_form(at: AppTest, epochs: int, seed: int = 0) -> None:
    at.radio(key="train_kind").set_value("cnn")
    at.selectbox(key="train_preset").set_value("tiny")
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_seed").set_value(seed)
    at.run()
    assert not at.exception, at.exception


def test_train_page_opens_the_cached_run_instead_of_retraining(lab):
    at = open_page("train.py")
    _set_train_form(at, epochs=TINY.epochs)
    assert any(f"Cached run `{lab.single.id}`" in s.value for s in at.success)
    assert "train_start" not in [b.key for b in at.button]
    assert "train_cached_curves" in charts(at)
    at.button(key="train_open_confusion.py").click().run()
    assert not at.exception
    assert at.session_state["selected_runs"] == [lab.single.id]
    assert at.selectbox(key="confusion_run").value == lab.single.id
    at.switch_page("../pages/train.py").run()  # the form comes back as it was left
    assert at.number_input(key="train_epochs").value == TINY.epochs
    assert any(f"Cached run `{lab.single.id}`" in s.value for s in at.success)

    other = open_page("train.py")
    _set_train_form(other, epochs=TINY.epochs + 1)
    assert other.button(key="train_start").label == "Start training"
    assert not other.success


def test_train_page_offers_runs_on_this_data_as_teachers(lab):
    """Distillation: runs on this data with the same validation split are offered, and the chosen one
    reaches the command; with another seed (another split) none qualifies."""
    at = open_page("train.py")
    _set_train_form(at, epochs=3)
    options = at.selectbox(key="train_teacher").options  # as shown: title [short id] and validation accuracy
    assert options[0] == "none"
    for run in (lab.single, lab.ensemble):
        assert any(f"[{run.id.rsplit('-', 1)[-1][:6]}] — val" in option for option in options), run.id
    at.selectbox(key="train_teacher").set_value(lab.ensemble.id).run()
    assert not at.exception, at.exception
    assert f"--teacher {lab.ensemble.id}" in at.code[0].value
    _set_train_form(at, epochs=3, seed=5)
    assert at.selectbox(key="train_teacher").options == ["none"]


def test_train_page_ensemble_with_or_without_bootstrap_resamples(lab):
    at = open_page("train.py")
    at.radio(key="train_kind").set_value("ensemble").run()
    assert "--no-resample" not in at.code[0].value and "train_teacher" not in [s.key for s in at.selectbox]
    at.toggle(key="train_resample").set_value(False).run()
    assert not at.exception, at.exception
    assert at.code[0].value.startswith("python -m core ensemble") and "--no-resample" in at.code[0].value


def test_train_page_runs_a_training_in_the_background(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(core.runs, "shipped_roots", lambda: [])
    at = open_page("train.py")
    _set_train_form(at, epochs=1, seed=7)
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    assert any("Training in the background" in i.value for i in at.info)
    store = RunStore(tmp_path / "runs", shipped=[])
    deadline = time.monotonic() + 300
    while not store.list() and time.monotonic() < deadline:
        time.sleep(2)
    (run,) = store.list()
    assert (tmp_path / "runs" / "jobs" / f"{run.id}.log").exists()
    at.run()
    assert any(f"Cached run `{run.id}`" in s.value for s in at.success)


def test_planned_ids_match_what_the_store_trains(lab):
    from dashboard.jobs import plan

    fingerprint = lab.data.fingerprint()
    assert plan(["train", "--model", "tiny", "--epochs", "2"], fingerprint).run_id == lab.single.id
    ensemble = plan(["ensemble", "--model", "tiny", "--epochs", "2", "--members", "2"], fingerprint)
    assert ensemble.run_id == lab.ensemble.id
    deep = plan(["ensemble", "--model", "tiny", "--epochs", "2", "--members", "2", "--no-resample"], fingerprint)
    assert deep.run_id != lab.ensemble.id and not deep.config.resample
    assert list(ensemble.member_ids) == lab.ensemble.config["members"]


def test_an_upload_reaches_the_training_process_as_a_file_with_its_name(tmp_path):
    from core.data import load_csv
    from dashboard.jobs import data_argument
    from dashboard.state import DEMO, upload_source

    text = ("emotion,pixels,Usage\n" + "\n".join(f"{i % 7},{' '.join([str(i)] * 2304)},Training" for i in range(7)) + "\n").encode()
    source = upload_source("faces.csv", text)
    store = RunStore(tmp_path, shipped=[])
    path = Path(data_argument(store, source, text))
    assert path.name == "faces.csv" and path.read_bytes() == text
    assert [p.name for p in path.parent.iterdir()] == ["faces.csv"]  # no temp file left behind
    in_memory, on_disk = load_csv("faces.csv", text=text), load_dataset(path)
    assert in_memory.fingerprint() == on_disk.fingerprint()  # same run ids
    assert list(in_memory.ids) == list(on_disk.ids)  # same face ids: the gallery finds the faces
    assert data_argument(store, DEMO, None) == "demo"


def test_status_tells_new_running_interrupted_and_finished(lab, tmp_path):
    from filelock import FileLock

    from core.runs import TRAINING_LOCK
    from dashboard.jobs import plan, status

    fingerprint = lab.data.fingerprint()
    assert status(lab.store, plan(["train", "--model", "tiny", "--epochs", "2"], fingerprint)).state == "finished"
    store = RunStore(tmp_path, shipped=[])
    request = plan(["train", "--model", "tiny", "--epochs", "3"], fingerprint)
    assert status(store, request).state == "new"
    tick = {"epoch": 1, "epochs": 3, "batch": 4, "batches": 18, "logs": {"loss": 1.5}, "time": time.time() - 3600}
    (tmp_path / request.run_id).mkdir()
    (tmp_path / request.run_id / "progress.json").write_text(json.dumps(tick))
    with FileLock(tmp_path / request.run_id / TRAINING_LOCK):  # a training process (CLI, another server) holds its run
        running = status(store, request)  # however old its last tick: a long validation is no death
    assert (running.state, running.training, running.tick["batch"]) == ("running", request.run_id, 4)
    assert status(store, request).state == "interrupted"  # the lock went with the process, the tick stayed behind


def test_a_plan_whose_runs_another_job_trains_shows_as_running(lab, tmp_path):
    """No second process for a run already in training: a CNN that is member 0 of a running deep
    ensemble, or a bigger ensemble sharing its first members, waits for that job."""
    from dashboard.jobs import Job, _registry, plan, status

    fingerprint = lab.data.fingerprint()
    store = RunStore(tmp_path, shipped=[])
    three, five = (plan(["ensemble", "--model", "tiny", "--epochs", "3", "--members", n, "--no-resample"], fingerprint)
                   for n in ("3", "5"))
    cnn = plan(["train", "--model", "tiny", "--epochs", "3"], fingerprint)
    assert three.member_ids[0] == cnn.run_id and five.member_ids[:3] == three.member_ids
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    jobs = _registry().jobs
    jobs[tmp_path / three.run_id] = Job(three, process, tmp_path / "three.log")
    try:
        assert status(store, cnn).state == "running" and status(store, five).state == "running"
        assert status(store, plan(["train", "--model", "tiny", "--epochs", "4"], fingerprint)).state == "new"
    finally:
        process.kill()
        process.wait()
        del jobs[tmp_path / three.run_id]
    assert status(store, cnn).state == "new"


# ----------------------------------------------------------------- curves


def test_curves_page_compares_runs_and_shows_the_ablation(lab):
    at = open_page("curves.py")
    with pytest.raises(KeyError):  # a page's default is not a choice to share
        at.session_state["selected_runs"]
    at.multiselect(key="curves_runs").set_value([lab.ensemble.id]).run()
    assert at.session_state["selected_runs"] == [lab.ensemble.id]  # the user's choice is
    at.multiselect(key="curves_runs").set_value([lab.single.id, lab.ensemble.id]).run()
    assert not at.exception
    figures = charts(at)
    assert len(figures["curves_training"]["data"]) == 8  # 2 runs x (loss, accuracy) x (train, val)
    assert len(figures["curves_times"]["data"]) == 2
    summary = table(at, "trainable params")
    assert list(summary["kind"]) == ["single", "ensemble x2"]
    assert summary["trainable params"].iloc[1] == 2 * summary["trainable params"].iloc[0]
    assert summary["test accuracy"].iloc[0] == pytest.approx(lab.single.metrics["test"]["accuracy"])
    ablation = table(at, "setting")
    assert list(ablation["setting"].astype(str)) == ["normalisation + augmentation"]
    assert "curves_ablation" in figures


# -------------------------------------------------------------- confusion


def test_confusion_page_shows_heatmap_metrics_and_a_cells_faces(lab):
    at = open_page("confusion.py", {"selected_runs": [lab.single.id]})
    assert at.selectbox(key="confusion_run").value == lab.single.id
    at.radio(key="confusion_split").set_value("val").run()
    heat = charts(at)["confusion_heatmap"]
    assert heat["data"][0]["type"] == "heatmap" and len(heat["data"][1]["x"]) == 49
    assert "confusion_per_class" in charts(at)
    report = lab.single.metrics["val"]
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{report['accuracy']:.1%}"
    confusion = np.array(report["confusion"])
    t, p = max(((t, p) for t in range(7) for p in range(7)), key=lambda c: confusion[c])
    at.selectbox(key="confusion_cell").set_value(f"{EMOTIONS[t]} → {EMOTIONS[p]}").run()
    assert not at.exception
    assert len(at.image) == min(confusion[t, p], 24)
    assert f"{confusion[t, p]} faces, true {EMOTIONS[t]}, predicted {EMOTIONS[p]}" in texts(at)
    at.button(key="confusion_explain_0").click().run()
    assert not at.exception
    face = at.session_state["explain_image"]
    assert face["label"] == t and face["image"].shape == (48, 48)
    assert at.title[0].value == "Explain"


def test_confusion_page_switches_ensemble_rules(lab):
    at = open_page("confusion.py", {"selected_runs": [lab.ensemble.id]})
    at.radio(key="confusion_split").set_value("test").run()
    at.radio(key="confusion_rule").set_value("vote").run()
    assert not at.exception
    vote = lab.ensemble.metrics["rules"]["vote"]["test"]
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{vote['accuracy']:.1%}"
    assert len(at.image) > 0


def test_confusion_page_asks_for_the_runs_data_when_another_is_loaded(lab, tmp_path):
    from dashboard.state import DataSource

    other = tmp_path / "other.csv"
    other.write_text("emotion,pixels\n" + "\n".join(f"{i % 7},{' '.join(['7'] * 2304)}" for i in range(7)) + "\n")
    at = open_page("confusion.py", {"selected_runs": [lab.single.id], "data_source": DataSource("path", str(other))})
    assert any("Load it to see them" in i.value for i in at.info)
    assert len(at.image) == 0
    at.button(key="confusion_load_data").click().run()
    assert not at.exception
    assert at.session_state["data_source"].kind == "demo"
    assert len(at.image) > 0


@pytest.mark.parametrize("page", ["curves.py", "confusion.py", "explain.py", "filters.py"])
def test_pages_without_runs_point_to_train(page, tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_RUNS", str(tmp_path / "empty"))
    monkeypatch.setattr(core.runs, "shipped_roots", lambda: [])
    at = open_page(page)
    assert any("train one first" in info.value for info in at.info)


def test_run_pickers_keep_the_best_plain_run_beside_an_ensemble_of_it(lab, tmp_path, monkeypatch):
    """Members are left out of the defaults, except a plain run that ``combine`` (or a deep ensemble's member 0)
    put into an ensemble: the comparison needs the best single net. Bagged members stay left out."""
    root = tmp_path / "runs"
    shutil.copytree(lab.root, root)
    monkeypatch.setenv("FERLAB_RUNS", str(root))
    bagged = lab.ensemble.config["members"][0]
    combined = RunStore(root).combine([lab.single.id, bagged])
    at = open_page("curves.py")
    assert set(at.multiselect(key="curves_runs").value) == {lab.single.id, lab.ensemble.id, combined.id}


def test_a_fresh_clone_starts_with_the_shipped_fer2013_models(tmp_path, monkeypatch):
    """Curves and Confusion open on the real-face runs in models/fer, not the demo ones (whose validation is higher)."""
    monkeypatch.setenv("FERLAB_RUNS", str(tmp_path))
    monkeypatch.setattr(core.runs, "shipped_roots", SHIPPED_ROOTS)  # the module's `lab` may have hidden them
    shipped = RunStore(tmp_path).list()
    fer = [r for r in shipped if r.metrics["data"]["source"] != "demo"]
    assert fer and len(fer) < len(shipped)
    members = {m for r in fer if r.is_ensemble for m in r.config["members"]}
    cnn = max((r for r in fer if not r.is_ensemble and not r.is_bagged),
              key=lambda r: r.metrics["val"]["accuracy"])  # a deep ensemble's member is a model of its own
    at = open_page("curves.py")
    assert set(at.multiselect(key="curves_runs").value) == {r.id for r in fer if r.id not in members} | {cnn.id}
    at = open_page("confusion.py")
    assert at.selectbox(key="confusion_run").value == max(fer, key=lambda r: r.metrics["val"]["accuracy"]).id
