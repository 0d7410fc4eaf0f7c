"""Dashboard part 2 with Streamlit's AppTest: Home's photo upload, the Data page's path errors,
the Train page's remembered form, Confusion's data loading, Explain, Trust and Filters.

Runs come from the session-wide ``dashboard_runs`` store (conftest: a tiny
CNN, a 2-member tiny ensemble, a DNN matched to tiny); each test points
$FERLAB_RUNS at it and leaves the shipped models out. Photos are built here:
scikit-image's astronaut photo (a real face) for detection, demo faces for
48x48 crops, and hand-made broken files. FERLAB_VIS_STEPS (conftest) keeps
gradient ascent short.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from apptest_pages import open_page
from streamlit.testing.v1 import AppTest

import core.runs
from core.data import EMOTIONS
from core.evaluation import predict_probs
from core.explain import Saliency, cover_regions
from core.explain.base import scores
from core.explain.compare import compare_methods, held_out_sample
from core.explain.trust import deletion_insertion, passes, sanity_check
from dashboard.overlay import colormap, enlarge_to, heat_overlay, stretch
from dashboard.photo_upload import prediction_table, read_photo
from dashboard.state import DataSource

METHODS = ("Saliency", "SmoothGrad", "Grad-CAM", "LIME")


@pytest.fixture
def lab(dashboard_runs, monkeypatch):
    monkeypatch.setenv("FERLAB_RUNS", str(dashboard_runs.root))
    monkeypatch.setattr(core.runs, "shipped_roots", lambda: [])
    return dashboard_runs


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def two_faces() -> bytes:
    """The astronaut twice, side by side: a 512x1024 photo with two faces."""
    from skimage import data

    astronaut = data.astronaut()
    return encode(np.hstack([astronaut, astronaut]), "JPEG")


def no_face() -> bytes:
    """A smooth colour gradient: nothing a detector could take for a face."""
    yy, xx = np.mgrid[0:240, 0:320]
    return encode(np.stack([xx * 255 // 320, yy * 255 // 240, np.full_like(xx, 128)], axis=2).astype(np.uint8))


def upload(at: AppTest, name: str, data: bytes, key: str = "home_photo_file") -> AppTest:
    at.file_uploader(key=key).upload(name, data, "image/png").run()
    assert not at.exception, at.exception
    return at


def bars(at: AppTest, key: str) -> list[dict]:
    chart = next(c for c in at.get("plotly_chart") if c.key == key)
    return json.loads(chart.proto.spec)["data"]


def numbers(values: list | dict) -> np.ndarray:
    """A Plotly JSON array: a plain list, or the typed-array form {"dtype": "f8", "bdata": base64}."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values, dtype=float)


def table_with(at: AppTest, column: str):
    return next(t.value for t in at.dataframe if column in t.value.columns)


def captions(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


# ------------------------------------------------------------------- home


def test_home_photo_boxes_every_face_and_every_model_predicts(lab, two_faces):
    at = upload(open_page("home.py"), "class.jpg", two_faces)
    assert "2 faces found, numbered left to right" in captions(at)
    runs = [lab.cnn, lab.ensemble, lab.dnn]
    at.multiselect(key="home_photo_runs").set_value([r.id for r in runs]).run()
    table = at.dataframe[-1].value
    assert list(table.index) == ["face 1", "face 2"] and len(table.columns) == 3
    assert all(cell.split()[0] in EMOTIONS for cell in table.to_numpy().ravel())

    traces = bars(at, "home_photo_bars")
    assert len(traces) == 3
    for trace in traces:
        probs = numbers(trace["y"])
        assert probs.shape == (7,) and (probs >= 0).all() and abs(probs.sum() - 1) < 1e-4
        assert list(trace["x"]) == list(EMOTIONS)

    at.radio(key="home_photo_face").set_value(1).run()
    at.button(key="home_photo_explain").click().run()
    assert not at.exception, at.exception
    sent = at.session_state["explain_image"]
    assert sent["image"].shape == (48, 48) and sent["label"] == -1 and "face 2" in sent["source"]
    assert at.title[0].value == "Explain"


def test_home_photo_without_a_face_offers_the_whole_image_or_a_centre_crop(lab):
    at = upload(open_page("home.py"), "wall.png", no_face())
    assert any("wall.png: no face found" in w.value for w in at.warning)
    assert not at.dataframe or "face 1" not in at.dataframe[-1].value.index  # nothing predicted until chosen
    at.radio(key="home_photo_fallback").set_value("centre").run()
    assert not at.exception, at.exception
    assert list(at.dataframe[-1].value.index) == ["face 1"]
    assert len(bars(at, "home_photo_bars")) == 3  # the default runs: CNN, ensemble and DNN (members left out)


def test_home_48px_face_skips_detection_and_is_the_model_input(lab):
    face = lab.data.images[7]
    at = upload(open_page("home.py"), "face.png", encode(face))
    assert any("already is a face crop" in c.value for c in at.caption)
    at.button(key="home_photo_explain").click().run()
    assert np.array_equal(at.session_state["explain_image"]["image"], face)


def test_home_covering_the_mouth_moves_each_models_answer(lab):
    face = lab.data.images[7]
    at = upload(open_page("home.py"), "face.png", encode(face))
    at.multiselect(key="home_photo_runs").set_value([lab.cnn.id, lab.dnn.id]).run()
    assert not [c for c in captions(at) if c.startswith("covered")]
    at.pills(key="home_photo_cover").set_value(["mouth", "eyes"]).run()
    assert not at.exception, at.exception
    assert "covered: the eyes, the mouth" in captions(at) or "covered: the mouth, the eyes" in captions(at)
    moved = next(t.value for t in at.dataframe if "covered" in t.value.columns)
    assert len(moved) == 2
    covered = np.clip(np.rint(cover_regions(face, ["mouth", "eyes"])), 0, 255).astype(np.uint8)
    for model, row in zip((lab.cnn.model(), lab.dnn.model()), moved.itertuples()):
        before, after = predict_probs(model, face[None])[0], predict_probs(model, covered[None])[0]
        assert row.face == f"{EMOTIONS[before.argmax()]} {before.max():.0%}"
        assert row.covered == f"{EMOTIONS[after.argmax()]} {after.max():.0%}"
    assert any(c.key == "home_photo_cover_bars" for c in at.get("plotly_chart"))


def test_home_test_time_augmentation_averages_the_views(lab):
    """The TTA toggle: each model's bars become its mean over the face's 10 views; covering follows suit."""
    face = lab.data.images[7]
    at = upload(open_page("home.py"), "face.png", encode(face))
    at.multiselect(key="home_photo_runs").set_value([lab.cnn.id]).run()
    plain = numbers(bars(at, "home_photo_bars")[0]["y"])
    at.toggle(key="home_photo_tta").set_value(True).run()
    assert not at.exception, at.exception
    averaged = numbers(bars(at, "home_photo_bars")[0]["y"])
    model = lab.cnn.model()
    np.testing.assert_allclose(plain, predict_probs(model, face[None])[0], atol=1e-5)
    np.testing.assert_allclose(averaged, predict_probs(model, face[None], tta="rotate-zoom")[0], atol=1e-5)
    assert not np.allclose(plain, averaged, atol=1e-4)
    at.pills(key="home_photo_cover").set_value(["mouth"]).run()
    covered = np.clip(np.rint(cover_regions(face, ["mouth"])), 0, 255).astype(np.uint8)
    after = predict_probs(model, covered[None], tta="rotate-zoom")[0]
    row = next(t.value for t in at.dataframe if "covered" in t.value.columns).iloc[0]
    assert row["covered"] == f"{EMOTIONS[after.argmax()]} {after.max():.0%}"


def test_home_photo_from_the_camera(lab):
    from skimage import data

    at = open_page("home.py")
    at.radio(key="home_photo_how").set_value("camera").run()
    at.camera_input(key="home_photo_camera").set_value(("image.jpg", encode(data.astronaut(), "JPEG"), "image/jpeg")).run()
    assert not at.exception, at.exception
    assert "1 face found, numbered left to right" in captions(at)
    assert list(at.dataframe[-1].value.index) == ["face 1"]


def _huge() -> bytes:
    return encode(Image.new("L", (10_000, 10_000), 128))


def _rgba(face: np.ndarray) -> bytes:
    alpha = np.full((48, 48), 255, np.uint8)
    alpha[:, :8] = 0
    return encode(np.dstack([face, face, face, alpha]))


@pytest.mark.parametrize(
    ("name", "make", "kind", "words"),
    [
        ("notes.jpg", lambda face: b"these are my holiday notes, not a picture", "error", "not an image"),
        ("cut.png", lambda face: encode(np.tile(face, (4, 4)))[:900], "error", "cut short"),
        ("huge.png", lambda face: _huge(), "error", "too large"),
        ("print.jpg", lambda face: encode(Image.fromarray(face).convert("CMYK"), "JPEG"), "warning", "CMYK"),
        ("logo.png", _rgba, "warning", "transparent"),
    ],
)
def test_bad_or_unusual_photos_give_a_message_not_a_traceback(lab, name, make, kind, words):
    at = upload(open_page("home.py"), name, make(lab.data.images[3]))
    messages = [m.value for m in getattr(at, kind)]
    assert any(words in m for m in messages), messages
    if kind == "error":
        assert any(m.startswith(f"{name}: ") for m in messages), messages  # which of the class's uploads it was
        assert not at.dataframe or "val accuracy" in at.dataframe[-1].value.columns  # only Home's best-models table
    else:
        assert not at.error and list(at.dataframe[-1].value.index) == ["face 1"]  # converted and predicted


def test_read_photo_and_prediction_table_without_a_browser(two_faces):
    found = read_photo("two-faces", two_faces)
    assert found.crops.shape == (2, 48, 48) and found.crops.dtype == np.uint8
    assert found.boxed.shape == (512, 1024, 3) and not found.skipped_detection and found.fallbacks == {}
    table = prediction_table({"a": np.eye(7)[[3, 5]], "b": np.full((2, 7), 1 / 7)})
    assert table.loc["face 1", "a"] == "Happy 100%" and table.loc["face 2", "a"] == "Surprise 100%"
    assert table.loc["face 2", "b"] == "Angry 14%"  # a tie goes to the first emotion


# ------------------------------------------------------------- data pickers


@pytest.mark.parametrize("typed, words", [("~nosuchuser/fer.csv", "no home directory for '~nosuchuser'"),
                                          ("{pipe}", "cannot be read")])
def test_a_server_path_that_cannot_be_read_is_a_message_not_a_traceback(typed, words, tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_RUNS", str(tmp_path / "empty"))
    monkeypatch.setattr(core.runs, "shipped_roots", lambda: [])
    os.mkfifo(tmp_path / "fer.pipe")
    at = open_page("data.py")
    at.radio(key="data_source_kind").set_value("path").run()
    at.text_input(key="data_source_path").input(typed.format(pipe=tmp_path / "fer.pipe")).run()
    at.button(key="data_source_load").click().run()
    assert not at.exception, at.exception
    assert words in at.error[0].value
    assert "data_source" not in at.session_state  # the demo set stays in use


# ------------------------------------------------------- train and confusion


def test_train_page_remembers_the_teacher_unless_it_is_no_longer_offered(lab):
    at = open_page("train.py")
    at.selectbox(key="train_teacher").set_value(lab.ensemble.id).run()
    at.switch_page("../pages/data.py").run()
    at.switch_page("../pages/train.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train_teacher").value == lab.ensemble.id
    assert f"--teacher {lab.ensemble.id}" in at.code[0].value

    at.switch_page("../pages/data.py").run()
    at.session_state["train_form"] = at.session_state["train_form"] | {"train_teacher": "tiny-deleted"}
    at.switch_page("../pages/train.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train_teacher").value == "none" and "--teacher" not in at.code[0].value


def test_confusion_page_loads_the_runs_data_by_its_absolute_path(lab, tmp_path, monkeypatch):
    """A run trained with a relative --data path: its Load button makes the path absolute, as the Data page does."""
    run = shutil.copytree(lab.cnn.path, tmp_path / "runs" / lab.cnn.path.name)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["data"] |= {"source": "faces.csv", "fingerprint": "another-data-set"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    rows = "".join(f"{i},{' '.join(['7'] * 2304)}\n" for i in range(7))
    (tmp_path / "faces.csv").write_text("emotion,pixels\n" + rows)
    monkeypatch.setenv("FERLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    at = open_page("confusion.py", {"selected_runs": [lab.cnn.id]})
    at.button(key="confusion_load_data").click().run()
    assert not at.exception, at.exception
    assert at.session_state["data_source"] == DataSource("path", str((tmp_path / "faces.csv").resolve()))


# ---------------------------------------------------------------- explain


def _explain(lab, face: np.ndarray, label: int = 3) -> AppTest:
    at = open_page("explain.py", {"explain_image": {"image": face, "label": label, "source": "test face"}})
    at.multiselect(key="explain_runs").set_value([lab.cnn.id, lab.ensemble.id, lab.dnn.id])
    at.slider(key="explain_lime_samples").set_value(100)
    at.run()
    assert not at.exception, at.exception
    return at


def test_run_titles_tell_dnns_of_different_sizes_apart(dashboard_runs):
    from dashboard.pickers import run_title

    assert run_title(dashboard_runs.dnn).startswith("dnn ~ tiny · norm+aug · 1 ep [")
    assert run_title(dashboard_runs.cnn).startswith("tiny · norm+aug · 1 ep [")


def test_a_run_started_from_another_runs_weights_counts_its_epochs(tmp_path):
    from dashboard.pickers import run_title

    path = tmp_path / "ferlab-wide-0123456789"
    path.mkdir()
    config = {"model": {"arch": "ferlab-wide", "normalize": True, "augment": {}}, "epochs": 4,
              "init_from": "ferlab-wide-f490fe10c1@70", "kind": "single", "label": "ferlab-wide"}
    (path / "config.json").write_text(json.dumps(config))
    assert run_title(core.runs.Run(path)) == "ferlab-wide · norm · 4 ep [012345]"  # the start's curve is not here
    pd.DataFrame({"epoch": range(1, 71), "val_accuracy": 0.5}).to_csv(path / core.runs.START_CURVE, index=False)
    assert run_title(core.runs.Run(path)) == "ferlab-wide · norm · 70+4 ep [012345]"


def test_an_ensemble_hides_its_members_but_the_best_net_trained_on_every_face(tmp_path):
    """A deep-ensemble member (every face, another seed) is a model in its own right and stays beside its
    ensemble when it is the best single net; a bagged member (a bootstrap resample) never does."""
    from dashboard.pickers import standalone

    def run(name: str, val: float, **config) -> core.runs.Run:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"kind": "single", **config}))
        (tmp_path / name / "metrics.json").write_text(json.dumps({"val": {"accuracy": val}, "data": {"fingerprint": "f"}}))
        return core.runs.Run(tmp_path / name)

    plain = run("plain", 0.60)
    deep = run("deep", 0.66, bootstrap=3, resample=False)
    bagged = run("bagged", 0.70, bootstrap=1, resample=True)
    ensemble = run("ensemble", 0.72, kind="ensemble", members=["plain", "deep", "bagged"])
    assert [r.id for r in standalone([plain, deep, bagged, ensemble])] == ["deep", "ensemble"]
    assert [r.id for r in standalone([plain, bagged, ensemble])] == ["plain", "ensemble"]


def test_explain_starts_with_the_best_cnn_dnn_and_ensemble(dashboard_runs):
    """Explain costs seconds a model, so it starts with one model of each kind, the best by validation."""
    from core.runs import RunStore
    from dashboard.pickers import best_of_each_kind, kind

    runs = RunStore(dashboard_runs.root, shipped=[]).list()  # the ensemble's members are CNNs too
    best_cnn = max((r for r in runs if kind(r) == "cnn"), key=lambda r: r.metrics["val"]["accuracy"])
    assert len([r for r in runs if kind(r) == "cnn"]) == 3
    assert [r.id for r in best_of_each_kind(runs)] == [best_cnn.id, dashboard_runs.dnn.id, dashboard_runs.ensemble.id]
    assert best_of_each_kind([dashboard_runs.ensemble]) == [dashboard_runs.ensemble]


def test_explain_draws_every_method_for_each_model_and_a_note_for_dnn_gradcam(lab):
    at = _explain(lab, lab.data.images[0])
    shown = captions(at)
    assert shown.count("Saliency") == shown.count("SmoothGrad") == shown.count("LIME") == 3
    assert shown.count("Grad-CAM") == 2  # the CNN and the ensemble
    notes = [i.value for i in at.info if "Grad-CAM" in i.value]
    assert len(notes) == 1 and "DNN" in notes[0]
    headings = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert len(headings) == 3 and "ensemble" in headings[1] and "dnn" in headings[2]
    assert sum("Predicts **" in m.value for m in at.markdown) == 3

    at.radio(key="explain_target").set_value("other").run()
    at.selectbox(key="explain_other").set_value(5).run()
    at.radio(key="explain_score").set_value("softmax").run()
    assert not at.exception, at.exception
    assert sum("explaining **Surprise**" in m.value for m in at.markdown) == 3
    at.multiselect(key="explain_methods").set_value(["gradcam"]).run()
    assert captions(at).count("Grad-CAM") == 2 and "SmoothGrad" not in captions(at)


def test_explain_shows_each_maps_trust_scores_and_runs_the_sanity_check(lab):
    face = lab.data.images[0]
    at = open_page("explain.py", {"explain_image": {"image": face, "label": 3, "source": "test face"}})
    at.multiselect(key="explain_runs").set_value([lab.cnn.id])
    at.multiselect(key="explain_methods").set_value(["saliency", "gradcam"]).run()
    assert not at.exception, at.exception
    trust = [c.value for c in at.caption if "deletion AUC" in c.value]
    assert len(trust) == 2
    model = lab.cnn.model()
    target = int(scores(model, "softmax", face[None])[0].argmax())
    expected = deletion_insertion(model, face, target, Saliency(model).explain(face[None], [target])[0])
    assert f"gain **{expected['gain']:+.2f}**" in trust[0] and f"deletion AUC {expected['deletion_auc']:.2f}" in trust[0]

    at.button(key=f"explain_sanity_{lab.cnn.id}").click().run()
    assert not at.exception, at.exception
    verdicts = [c.value for c in at.caption if c.value.startswith("sanity check")]
    cascade = sanity_check(model, Saliency, face, target)
    assert len(verdicts) == 2 and f"Spearman {cascade[-1]['spearman']:.2f}" in verdicts[0]
    assert ("passes" in verdicts[0]) == passes(cascade)
    chart = next(c for c in at.get("plotly_chart") if c.key == f"explain_sanity_chart_{lab.cnn.id}")
    assert len(json.loads(chart.proto.spec)["data"]) == 4  # Spearman and SSIM for each method
    assert sum("random to" in c for c in captions(at)) >= 4

    at.toggle(key="explain_trust").set_value(False).run()
    assert not [c for c in at.caption if "deletion AUC" in c.value]


def test_explain_takes_faces_from_the_data_set_and_from_a_photo(lab):
    at = open_page("explain.py")
    assert at.radio(key="explain_source").options == ["A face of the data set", "Upload a photo"]
    at.multiselect(key="explain_runs").set_value([lab.cnn.id]).run()
    at.number_input(key="explain_face_index").set_value(4).run()
    assert not at.exception, at.exception
    assert captions(at).count("LIME") == 1

    at.radio(key="explain_source").set_value("upload").run()
    upload(at, "me.png", encode(lab.data.images[9]), key="explain_photo_file")
    assert any("your photo me.png, face 1" in c for c in captions(at))
    assert captions(at).count("Saliency") == 1


def test_a_face_sent_from_the_data_page_is_the_one_explained(lab):
    at = open_page("explain.py")
    at.radio(key="explain_source").set_value("upload").run()
    at.switch_page("../pages/data.py").run()
    at.number_input(key="data_face_index").set_value(3).run()
    at.button(key="data_explain").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="explain_source").value == "sent"
    face_id = lab.data.split("Training").ids[3]
    assert any(c.endswith(face_id) for c in captions(at)), captions(at)


# ------------------------------------------------------------------ trust


def _trust(run_id: str, methods: list[str]) -> AppTest:
    at = open_page("trust.py")
    at.selectbox(key="trust_run").set_value(run_id)
    at.slider(key="trust_faces").set_value(5)
    at.slider(key="trust_sanity_faces").set_value(1)
    at.slider(key="trust_lime_samples").set_value(100)
    at.multiselect(key="trust_methods").set_value(methods).run()
    assert not at.exception, at.exception
    return at


def test_trust_page_ranks_the_methods_once_for_every_session(lab):
    at = _trust(lab.cnn.id, ["saliency", "gradcam", "occlusion"])
    assert not at.get("plotly_chart")  # nothing computed before the button
    at.button(key="trust_compute").click().run()
    assert not at.exception, at.exception
    shown = table_with(at, "faithfulness_s")
    assert sorted(shown["title"]) == ["Grad-CAM", "Occlusion", "Saliency"]
    assert list(shown["gain"]) == sorted(shown["gain"], reverse=True)
    sample = held_out_sample(lab.data, 5)
    model = lab.cnn.model()
    direct = compare_methods(model, sample.images, predict_probs(model, sample.images).argmax(axis=1), {"saliency": {}},
                             masks=sample.masks, sanity_faces=1)
    row = shown.set_index("title").loc["Saliency"]
    assert row["gain"] == pytest.approx(direct["gain"][0], abs=1e-9)
    assert row["mass_ratio"] == pytest.approx(direct["mass_ratio"][0], abs=1e-9)  # demo faces: ground truth shown
    assert any(c.key == "trust_chart" for c in at.get("plotly_chart"))

    again = _trust(lab.cnn.id, ["saliency", "gradcam", "occlusion"])  # another session, same settings
    assert "trust_compute" not in [b.key for b in again.button]
    assert table_with(again, "faithfulness_s")["gain"].tolist() == shown["gain"].tolist()


def test_a_comparison_queued_behind_another_says_it_waits(lab):
    """The server runs one comparison at a time; the one queued behind it reports that, then computes."""
    import threading
    import time

    from dashboard import inference

    ticks: list[str] = []
    sample = held_out_sample(lab.data, 5)
    gate = threading.Event()
    inference._comparisons()["pool"].submit(gate.wait)  # another session's comparison holds the worker
    worker = threading.Thread(target=inference.compare, args=(
        ("queued", lab.cnn.id), str(lab.cnn.path), sample, {"saliency": {}}, 0, lambda what, done, total: ticks.append(what)))
    worker.start()
    deadline = time.monotonic() + 30
    while not ticks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ticks and set(ticks) == {inference.WAITING} and inference.pending(("queued", lab.cnn.id))
    gate.set()
    worker.join(timeout=120)
    assert inference.comparison(("queued", lab.cnn.id)) is not None and not inference.pending(("queued", lab.cnn.id))


def test_a_comparison_goes_on_when_the_session_that_started_it_reruns(lab):
    """Streamlit stops a rerun session's script at its next ``st`` call (its progress bar): the work, which
    the whole class may be waiting for, goes on in the server's worker, and the next session gets its table."""
    import threading

    from dashboard import inference

    key, sample = ("rerun", lab.cnn.id), held_out_sample(lab.data, 5)
    gate = threading.Event()
    inference._comparisons()["pool"].submit(gate.wait)  # so that the first session polls at least once

    def rerun(*tick):
        raise RuntimeError("script stopped")

    with pytest.raises(RuntimeError, match="script stopped"):
        inference.compare(key, str(lab.cnn.path), sample, {"saliency": {}}, 0, progress=rerun)
    assert inference.pending(key)
    gate.set()
    table = inference.compare(key, str(lab.cnn.path), sample, {"saliency": {}}, 0, progress=lambda *tick: None)
    assert inference.comparison(key) is table and table["title"].tolist() == ["Saliency"]


def test_trust_page_notes_methods_a_dnn_cannot_use(lab):
    at = _trust(lab.dnn.id, ["saliency", "gradcam"])
    at.button(key="trust_compute").click().run()
    assert not at.exception, at.exception
    assert table_with(at, "faithfulness_s")["title"].tolist() == ["Saliency"]
    assert any("Grad-CAM" in i.value and "convolutional" in i.value for i in at.info)


def test_trust_page_with_no_method_the_model_can_use_shows_only_the_notes(lab):
    at = _trust(lab.dnn.id, ["gradcam", "gradcampp"])
    at.button(key="trust_compute").click().run()
    assert not at.exception, at.exception
    assert not at.get("plotly_chart") and not at.dataframe  # nothing ranked: no chart, no table
    assert [i.value.split("**")[1] for i in at.info] == ["Grad-CAM", "Grad-CAM++"]


# ---------------------------------------------------------------- filters


def test_filters_page_draws_filters_feature_maps_and_emotions(lab):
    at = open_page("filters.py")
    choices = at.selectbox(key="filters_run").options
    assert len(choices) == 3  # the CNN and the ensemble's two members: no DNN, no ensemble
    at.selectbox(key="filters_run").set_value(lab.cnn.id).run()
    filters, maps, emotions = at.image[0], at.image[2], at.image[3]
    assert filters.captions == [f"filter {i}" for i in range(16)] and maps.captions == filters.captions
    assert emotions.captions == list(EMOTIONS)

    at.selectbox(key="filters_layer").set_value("s2_conv").run()
    at.number_input(key="filters_start").set_value(124).run()
    assert not at.exception, at.exception
    assert at.number_input(key="filters_count").value == 4  # only 128 filters in that layer
    assert at.image[0].captions == [f"filter {i}" for i in range(124, 128)]


# ---------------------------------------------------------------- drawing


def test_overlay_leaves_cold_pixels_alone_and_paints_hot_ones():
    face = np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) % 256
    heat = np.zeros((48, 48), np.float32)
    heat[10, 20] = 1.0
    out = heat_overlay(face.astype(np.uint8), heat, opacity=1.0, scale=4)
    assert out.shape == (192, 192, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0:4, 0:4, 0], np.full((4, 4), face[0, 0]))  # no heat: the face's own grey
    assert np.array_equal(out[40:44, 80:84], np.broadcast_to(np.round(colormap(1.0)).astype(np.uint8), (4, 4, 3)))
    assert np.array_equal(stretch(np.array([[[2.0, 4.0]], [[5.0, 5.0]]])), [[[0, 255]], [[0, 0]]])
    assert enlarge_to(np.zeros((3, 12, 12)), 96).shape == (3, 96, 96)
