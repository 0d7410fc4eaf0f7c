"""Training, the run store's cache, resume after a kill, ensembles, distribution, CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from core.demo import make_demo
from core.evaluation import combine, forward_select, metrics, predict_probs
from core.models import ModelSpec, inference_model, last_conv_layer
from core.runs import TRAINING_LOCK, Run, RunBusy, RunStore, _counted, evaluate, training_now
from core.packing import read_packed
from core.training import (
    BEST_EPOCH,
    CARRIED_BEST,
    CARRIED_WEIGHTS,
    TrainConfig,
    best_epoch,
    build_compiled,
    carry,
    compute_policy,
    distill_targets,
    estimate_moments,
    file_digest,
    fit,
    make_dataset,
    read_history,
    save_atomic,
    training_split,
    with_policy,
)

ROOT = Path(__file__).resolve().parent.parent
TINY = TrainConfig(model=ModelSpec("tiny"), epochs=2, batch_size=32)


def _cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_train_writes_a_complete_run_and_caches_it(demo_small, runs_dir):
    store = RunStore(runs_dir, shipped=[])
    run = store.train(TINY, demo_small)
    for name in ("config.json", "history.csv", "model.keras", "metrics.json", "predictions.npz"):
        assert (run.path / name).exists(), name
    history = run.history()
    assert list(history.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds",
                                     "compute"]
    assert history["epoch"].tolist() == [1, 2] and history["compute"].tolist() == ["float32", "float32"]
    m = run.metrics
    assert set(m["val"]["per_class"]) == {"Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"}
    assert np.array(m["val"]["confusion"]).sum() == m["val"]["n"]
    assert m["test"]["n"] == 70 and "test_tta" in m and m["params"]["trainable"] > 0 and m["hardware"]
    preds = run.predictions()
    np.testing.assert_allclose(preds["val_probs"].sum(1), 1, atol=1e-4)
    # The same request again: the stored run, at once, untouched.
    stamp = (run.path / "metrics.json").stat().st_mtime_ns
    start = time.perf_counter()
    again = store.train(TINY, demo_small)
    assert again.path == run.path and time.perf_counter() - start < 2.0
    assert (run.path / "metrics.json").stat().st_mtime_ns == stamp
    # Different data -> a different run id.
    assert store.run_id(TINY.to_dict(), "other") != run.id
    assert [r.id for r in store.list()] == [run.id]


def test_saved_model_reloads_with_the_same_predictions(demo_small, runs_dir):
    run = RunStore(runs_dir, shipped=[]).train(TINY, demo_small)
    preds = run.predictions()
    from core.evaluation import predict_probs

    val = training_split(demo_small, TINY)[1]
    np.testing.assert_allclose(predict_probs(run.model(), val.images), preds["val_probs"], atol=1e-5)
    assert not any("random" in layer.name for layer in run.model().layers)  # augmentation stripped


def test_resume_after_sigkill_continues_from_the_last_finished_epoch(tmp_path):
    """Kill -9 a CLI training mid-way; the same command resumes, keeping the finished epochs."""
    runs = tmp_path / "runs"
    args = ["train", "--model", "tiny", "--epochs", "6", "--batch-size", "16", "--runs", str(runs)]
    proc = subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    history = None
    while time.time() < deadline:
        found = list(runs.glob("*/history.csv"))
        if found and len(pd.read_csv(found[0])) >= 2:
            history = found[0]
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert history is not None, "training never finished two epochs"
    run_dir = history.parent
    before = pd.read_csv(history)
    assert not (run_dir / "metrics.json").exists()
    assert RunStore(runs, shipped=[]).list() == []  # a killed run is not listed as finished
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    after = pd.read_csv(run_dir / "history.csv")
    assert after["epoch"].tolist() == list(range(1, 7))
    # The epochs finished before the kill were kept, not retrained.
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)


def test_combine_rules_by_hand():
    a = np.array([[0.6, 0.4], [0.2, 0.8]])
    b = np.array([[0.1, 0.9], [0.3, 0.7]])
    c = np.array([[0.7, 0.3], [0.6, 0.4]])
    np.testing.assert_allclose(combine([a, b, c], "average"), [[1.4 / 3, 1.6 / 3], [1.1 / 3, 1.9 / 3]])
    assert combine([a, b, c], "vote").argmax(1).tolist() == [0, 1]  # two of three say 0; two of three say 1
    weighted = combine([a, b, c], "weighted", weights=[0.0, 1.0, 0.0])
    np.testing.assert_allclose(weighted, b)
    with pytest.raises(ValueError):
        combine([a, b], "weighted")


def test_forward_selection_adds_only_members_that_raise_accuracy():
    y = np.array([0, 0, 0, 1])
    a = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])  # 3 of 4 alone
    b = np.array([[0.4, 0.6], [0.4, 0.6], [0.4, 0.6], [0.1, 0.9]])  # 1 of 4 alone, but mends a's mistake
    c = np.array([[0.8, 0.2], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])  # 2 of 4, the same mistakes as a and one more
    assert forward_select([c, b, a], y) == [2, 1]  # a + b: 4 of 4, and then c cannot raise it
    assert forward_select([a, c], y) == [0]  # a + c: still 3 of 4
    assert forward_select([a, a.copy()], y) == [0]  # ties keep the first listed, and a copy adds nothing


def test_rotate_zoom_views_turn_both_ways_and_zoom_in_and_out_about_the_centre(demo_small):
    from core.evaluation import TTA_ZOOM, predict_probs, tta_views
    from core.models import build_model

    yy, xx = np.mgrid[:48, :48] - 23.5
    disk = (np.hypot(yy, xx) < 12).astype(np.float32) * 200  # (48, 48), centred
    bar = (np.abs(yy) < 2).astype(np.float32) * (np.abs(xx) < 18) * 200  # horizontal, centred
    x = np.stack([disk, bar])[..., None]  # (2, 48, 48, 1)
    views = tta_views(x, "rotate-zoom")
    np.testing.assert_array_equal(views[0], x)
    turned_back, turned_on, zoom_out, zoom_in = views[1:5]
    bright = lambda v: float((v[0] > 100).sum())  # noqa: E731  (disk's area in px)
    assert bright(turned_back) == pytest.approx(bright(x), rel=0.03)  # a disk turns into itself
    assert bright(zoom_out) / bright(x) == pytest.approx((1 - TTA_ZOOM) ** 2, rel=0.06)
    assert bright(zoom_in) / bright(x) == pytest.approx((1 + TTA_ZOOM) ** 2, rel=0.06)
    assert not np.allclose(turned_on[1], bar[..., None], atol=50)  # the bar turns ...
    np.testing.assert_allclose(turned_back[1], turned_on[1][::-1], atol=200 / 32)  # ... both ways alike (OpenCV: 1/32 weights)
    np.testing.assert_array_equal(views[6], turned_back[:, :, ::-1])  # the mirrors follow

    model = build_model(ModelSpec("tiny"))
    faces = demo_small.images[:8]
    manual = np.mean([model.predict(v, verbose=0) for v in tta_views(faces[..., None].astype(np.float32), "rotate-zoom")], axis=0)
    np.testing.assert_allclose(predict_probs(model, faces, tta="rotate-zoom"), manual, atol=1e-6)


def test_test_time_augmentation_averages_mirrored_and_shifted_views(demo_small):
    from core.evaluation import TTA_MODES, TTA_SHIFT, predict_probs, tta_views
    from core.models import build_model

    x = np.arange(2 * 48 * 48, dtype=np.float32).reshape(2, 48, 48, 1)
    assert [len(tta_views(x, mode)) for mode in TTA_MODES] == [1, 2, 10, 10]
    views, s = tta_views(x, "shifts"), TTA_SHIFT
    np.testing.assert_array_equal(views[1][:, s:], x[:, :-s])  # moved down s px ...
    np.testing.assert_array_equal(views[1][:, :s], np.repeat(x[:, :1], s, axis=1))  # ... the top filled with the edge row
    np.testing.assert_array_equal(views[4][:, :, :-s], x[:, :, s:])  # moved left
    np.testing.assert_array_equal(views[5], x[:, :, ::-1])  # the mirrors follow
    np.testing.assert_array_equal(views[9], views[4][:, :, ::-1])

    model = build_model(ModelSpec("tiny"))
    faces = demo_small.images[:8]
    manual = np.mean([model.predict(v, verbose=0) for v in tta_views(faces[..., None].astype(np.float32), "shifts")], axis=0)
    np.testing.assert_allclose(predict_probs(model, faces, tta="shifts"), manual, atol=1e-6)
    assert not np.allclose(predict_probs(model, faces, tta="flip"), manual, atol=1e-4)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'crop'"):
        predict_probs(model, faces, tta="crop")


def test_metrics_by_hand():
    probs = np.eye(7)[[0, 1, 1, 3]]
    m = metrics(np.array([0, 1, 2, 3]), probs)
    assert m["accuracy"] == 0.75
    assert m["confusion"][2][1] == 1
    assert m["per_class"]["Disgust"]["precision"] == 0.5 and m["per_class"]["Fear"]["recall"] == 0.0


def test_bagging_ensemble_reports_all_rules(demo_small, runs_dir):
    store = RunStore(runs_dir, shipped=[])
    ens = store.ensemble(TINY, 2, demo_small)
    assert ens.is_ensemble and len(ens.member_paths()) == 2
    assert set(ens.metrics["rules"]) == {"average", "vote", "weighted"}
    members = [json.loads((p / "config.json").read_text()) for p in ens.member_paths()]
    assert [m["bootstrap"] for m in members] == [0, 1]
    # Members see different bootstrap resamples of the same training part, and the same validation set.
    t0, v0 = training_split(demo_small, TrainConfig(**{**TINY.__dict__, "bootstrap": 0}))
    t1, v1 = training_split(demo_small, TrainConfig(**{**TINY.__dict__, "bootstrap": 1}))
    assert not np.array_equal(t0.ids, t1.ids) and np.array_equal(v0.ids, v1.ids)
    assert len(set(t0.ids.tolist())) < len(t0)  # drawn with replacement
    probs = ens.model().predict(demo_small.images[:5, ..., None].astype("float32"), verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    report = evaluate(ens, demo_small, split="PublicTest")
    assert report["average"]["accuracy"] == pytest.approx(ens.metrics["rules"]["average"]["test"]["accuracy"], abs=1e-6)
    # "validation" is the runs' own held-out part of Training: the faces their stored val figures are on.
    report = evaluate(ens, demo_small, split="validation")
    assert report["vote"]["accuracy"] == pytest.approx(ens.metrics["rules"]["vote"]["val"]["accuracy"], abs=1e-6)
    member = Run(ens.member_paths()[1])
    assert report["vote"]["n"] == len(v0) == len(member.predictions()["val_y"])
    assert evaluate(member, demo_small, split="val")["single"]["accuracy"] == pytest.approx(member.metrics["val"]["accuracy"], abs=1e-6)


def test_an_ensemble_without_resampling_differs_by_seed_only(demo_small, runs_dir):
    """--no-resample: each member trains on every training face once; the members still differ.
    A member trained alone (--member) is the one the ensemble uses."""

    config = replace(TINY, epochs=1, resample=False)
    t0, v0 = training_split(demo_small, replace(config, bootstrap=0))
    t1, v1 = training_split(demo_small, replace(config, bootstrap=1))
    plain, _ = training_split(demo_small, TINY)
    assert np.array_equal(t0.ids, plain.ids) and np.array_equal(t1.ids, plain.ids) and np.array_equal(v0.ids, v1.ids)
    store = RunStore(runs_dir, shipped=[])
    second_alone = store.train_member(config, 2, 1, demo_small)  # --member 1: trained ahead, e.g. elsewhere
    ens = store.ensemble(config, 2, demo_small)
    assert ens.member_paths()[1] == second_alone.path  # the ensemble found it instead of training it again
    with pytest.raises(ValueError, match="--member must be between 0 and 1"):
        store.train_member(config, 2, 2, demo_small)
    assert ens.label == "ensemble x2 tiny (all faces)"
    assert ens.id != store.ensemble(replace(config, resample=True), 2, demo_small).id
    first, second = (Run(p).model() for p in ens.member_paths())
    conv = last_conv_layer(first)
    assert not np.allclose(first.get_layer(conv).get_weights()[0], second.get_layer(conv).get_weights()[0])
    assert [Run(p).label for p in ens.member_paths()] == ["tiny", "tiny member1"]
    # Member 0 (seed + 0, every face) is the plain run of the same flags: found, not trained again.
    assert store.train(replace(config, resample=True), demo_small).path == ens.member_paths()[0]


def test_combine_averages_runs_of_different_architectures(demo_small, runs_dir):
    """A CNN and a DNN combined: the ensemble's stored and live probabilities are the members' mean."""

    store = RunStore(runs_dir, shipped=[])
    cnn = store.train(replace(TINY, epochs=1), demo_small)
    dnn = store.train(replace(TINY, epochs=1, model=ModelSpec("dnn", dnn_match="tiny")), demo_small)
    both = store.combine([cnn.id, dnn.id])
    assert both.is_ensemble and both.arch == "tiny+dnn" and both.base_config == cnn.config
    assert both.label == "ensemble of tiny + dnn"
    assert store.combine([cnn.id, dnn.id]).id == both.id  # stored: returned as it is
    stored = [r.predictions()["test_probs"] for r in (cnn, dnn)]
    np.testing.assert_allclose(both.predictions()["test_probs"], (stored[0] + stored[1]) / 2, atol=1e-6)
    faces = demo_small.images[:4, ..., None].astype("float32")
    live = [r.model().predict(faces, verbose=0) for r in (cnn, dnn)]
    np.testing.assert_allclose(both.model().predict(faces, verbose=0), (live[0] + live[1]) / 2, atol=1e-5)
    assert set(both.metrics["rules"]) == {"average", "vote", "weighted"}
    from dashboard.tables import run_table

    store.pack(cnn.id, demo_small)
    assert run_table([both, cnn, dnn])["weights"].tolist() == ["float16+float32", "float16", "float32"]
    # The ensemble's stored predictions and metrics are now those of the packed member, the earlier ones on record.
    after, packed = Run(both.path), Run(cnn.path).predictions()["test_probs"]
    np.testing.assert_allclose(after.predictions()["test_probs"], (packed + stored[1]) / 2, atol=1e-6)
    assert after.metrics["rules_float32"]["average"] == {k: both.metrics[k]["accuracy"] for k in ("val", "test")}
    np.testing.assert_allclose(cnn.model().predict(faces, verbose=0), live[0], atol=2e-2)  # a Run from before the pack


def _candidates_a_b_c(store: RunStore, data) -> list[Run]:
    """Three finished runs on one validation split whose stored validation predictions
    are set by hand, so that the plain choice is known: b alone is the best, a
    mends b's one mistake, c adds nothing (selection keeps b + a, accuracy 1.0)."""
    runs = [store.train(replace(TINY, epochs=epochs), data) for epochs in (1, 2)]
    runs.append(store.train(replace(TINY, epochs=1, model=ModelSpec("dnn", dnn_match="tiny")), data))
    y = runs[0].predictions()["val_y"]
    right, wrong = np.eye(7)[y], np.eye(7)[(y + 1) % 7]
    first = np.arange(len(y))[:, None] == 0
    hand = {
        "a": np.where(first, right, 0.4 * right + 0.6 * wrong),  # right on the first face only
        "b": np.where(first, 0.3 * right + 0.7 * wrong, 0.9 * right + 0.1 * wrong),  # right on all but the first
        "c": 0.2 * right + 0.8 * wrong,  # never right, and no help to b on the first face
    }
    for run, probs in zip(runs, hand.values()):
        np.savez(run.path / "predictions.npz", **{**run.predictions(), "val_probs": probs})
    return runs


def test_combine_select_keeps_the_runs_that_raise_validation_accuracy(demo_small, runs_dir):
    store = RunStore(runs_dir, shipped=[])
    ids = [run.id for run in _candidates_a_b_c(store, demo_small)]
    unselected = store.combine([ids[1], ids[0]])  # the same members, not chosen on validation
    picked = store.combine(ids, select=True)
    assert picked.config["members"] == [ids[1], ids[0]] and picked.metrics["selected_from"] == ids
    assert picked.id != unselected.id and "selected_from" not in Run(unselected.path).metrics
    assert picked.metrics["val"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match=f"selection kept only {ids[1]}"):
        store.combine([ids[1], ids[2]], select=True)
    cli = _cli("combine", "--select", "--runs", str(runs_dir), *ids)
    assert cli.returncode == 0 and cli.stdout.strip().endswith(picked.id), cli.stderr[-2000:]


def test_combine_select_under_tta_chooses_on_validation_faces_predicted_again(demo_small, runs_dir):
    """With --tta the candidates' validation probabilities are predicted again under
    it: choosing on the stored (plain, hand-set) ones would give b + a at validation
    accuracy 1.0, which the TTA choice must not echo."""
    store = RunStore(runs_dir, shipped=[])
    runs = _candidates_a_b_c(store, demo_small)
    y = runs[0].predictions()["val_y"]
    ids = [run.id for run in runs]

    _, val = training_split(demo_small, runs[0].train_config())
    flip = [predict_probs(run.model(), val.images, tta="flip") for run in runs]
    expected = forward_select(flip, y)
    assert expected != [1, 0]  # else this test could not tell the two choices apart
    if len(expected) < 2:
        with pytest.raises(ValueError, match=f"selection kept only {ids[expected[0]]}"):
            store.combine(ids, select=True, tta="flip", data=demo_small)
    else:
        picked = store.combine(ids, select=True, tta="flip", data=demo_small)
        assert picked.config["members"] == [ids[i] for i in expected]
        chosen_val = float((np.mean([flip[i] for i in expected], axis=0).argmax(1) == y).mean())
        assert picked.metrics["selected_with"] == {"tta": "flip", "val_accuracy": pytest.approx(chosen_val)}

    for kwargs, message in [({"tta": "flip"}, "goes with --select"),
                            ({"select": True, "tta": "flip"}, "give --data"),
                            ({"select": True, "tta": "flip", "data": make_demo(n_per_class=4, test_per_class=1, seed=9)}, "--data: .* was trained on other data")]:
        with pytest.raises(ValueError, match=message):
            store.combine(ids, **kwargs)


def test_a_csv_and_its_gzip_hold_the_same_rows(tmp_path):
    """What ``combine --select --tta`` checks: runs trained on fer2013.csv.gz choose on fer2013.csv too."""
    import gzip

    from core.data import load_csv
    from core.runs import _rows

    text = "emotion,pixels,Usage\n" + "".join(f"{e},{' '.join([str(e)] * 2304)},Training\n" for e in range(7))
    (tmp_path / "faces.csv").write_text(text)
    (tmp_path / "faces.csv.gz").write_bytes(gzip.compress(text.encode()))
    plain, packed = load_csv(tmp_path / "faces.csv"), load_csv(tmp_path / "faces.csv.gz")
    assert plain.fingerprint() == packed.fingerprint() and list(plain.ids) != list(packed.ids)
    assert _rows(plain.ids) == _rows(packed.ids) == [str(line) for line in range(2, 9)]


def test_a_combined_ensembles_label_counts_repeated_architectures():
    """A deep ensemble of 5 ferlab is labelled '5 ferlab', not five names in a row."""
    assert _counted(["ferlab", "ferlab", "vgg9", "ferlab"]) == "3 ferlab + vgg9"
    assert _counted(["tiny", "dnn"]) == "tiny + dnn"


def test_combine_refuses_what_does_not_line_up(demo_small, runs_dir):

    store = RunStore(runs_dir, shipped=[])
    one = store.train(replace(TINY, epochs=1), demo_small)
    other_split = store.train(replace(TINY, epochs=1, val_fraction=0.2), demo_small)
    bagged = store.ensemble(replace(TINY, epochs=1), 2, demo_small)
    for ids, message in [
        ([one.id], "at least 2 runs"),
        ([one.id, one.id], "combined once"),
        ([one.id, "tiny-0000000000"], "no finished run 'tiny-0000000000'"),
        ([one.id, bagged.id], "is an ensemble"),
        ([one.id, other_split.id], "another validation split"),
    ]:
        with pytest.raises(ValueError, match=message):
            store.combine(ids)


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    """tf.distribute: the same training under MirroredStrategy over 2 logical CPU devices."""
    script = f"""
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, {str(ROOT)!r})
from core.demo import make_demo
from core.models import ModelSpec, last_conv_layer
from core.runs import RunStore
from core.training import TrainConfig
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
run = RunStore({str(tmp_path)!r}, shipped=[]).train(
    TrainConfig(model=ModelSpec("tiny"), epochs=1, batch_size=32), make_demo(20, 5), strategy=strategy)
print("REPLICAS", strategy.num_replicas_in_sync, "ACC", run.metrics["val"]["accuracy"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REPLICAS 2" in done.stdout


def test_cli_train_list_predict_evaluate(tmp_path):
    runs = str(tmp_path / "runs")
    env = {"FERLAB_RUNS": runs}
    trained = _cli("train", "--model", "tiny", "--epochs", "1", env=env)
    assert trained.returncode == 0, trained.stderr
    run_dir = Path(trained.stdout.strip().splitlines()[-1])
    assert (run_dir / "metrics.json").exists() and "epoch 1/1" in trained.stderr
    listed = _cli("list", env=env)
    assert run_dir.name in listed.stdout
    from PIL import Image

    from core.demo import make_demo

    Image.fromarray(make_demo(1, 1).images[0]).resize((96, 96)).save(tmp_path / "face.png")
    predicted = _cli("predict", run_dir.name, str(tmp_path / "face.png"), env=env)
    assert predicted.returncode == 0, predicted.stderr
    probs = [float(line.split("\t")[1]) for line in predicted.stdout.splitlines()[:7]]
    assert len(probs) == 7 and abs(sum(probs) - 1) < 1e-3
    for tta in (["--tta"], ["--tta", "shifts"]):
        evaluated = _cli("evaluate", run_dir.name, *tta, env=env)
        assert evaluated.returncode == 0 and evaluated.stdout.startswith("single\taccuracy")
        assert "warning" not in evaluated.stderr  # its own data, a held-out split


def test_cli_evaluate_warns_when_the_faces_are_not_held_out(tmp_path):
    """Another data set (here a CSV of other demo faces) or the run's Training split:
    the accuracy still prints, with a warning that it is not comparable."""
    from core.demo import make_demo

    env = {"FERLAB_RUNS": str(tmp_path / "runs")}
    run_dir = Path(_cli("train", "--model", "tiny", "--epochs", "1", env=env).stdout.strip().splitlines()[-1])
    other = make_demo(5, 3, seed=7)
    rows = [f"{y},{' '.join(map(str, face.ravel()))},{split}" for face, y, split in zip(other.images, other.labels, other.splits)]
    (tmp_path / "other.csv").write_text("\n".join(["emotion,pixels,Usage", *rows]) + "\n")
    elsewhere = _cli("evaluate", run_dir.name, "--data", str(tmp_path / "other.csv"), env=env)
    assert elsewhere.returncode == 0 and elsewhere.stdout.startswith("single\taccuracy"), elsewhere.stderr
    assert f"warning: {run_dir.name} was trained on other data (demo" in elsewhere.stderr and "other.csv" in elsewhere.stderr
    trained_on = _cli("evaluate", run_dir.name, "--split", "train", env=env)
    assert trained_on.returncode == 0 and "this accuracy is not held-out" in trained_on.stderr
    # Its validation faces are a part of the data it was trained on: none in another data set.
    no_val = _cli("evaluate", run_dir.name, "--split", "validation", "--data", str(tmp_path / "other.csv"), env=env)
    assert no_val.returncode == 2 and f"error: --data: {run_dir.name} was trained on other data" in no_val.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "resnet", "--epochs", "1"], "unknown model 'resnet'"),
        (["train", "--data", "/nope.csv", "--epochs", "1"], "/nope.csv: no such file"),
        (["predict", "nope", "face.png"], "no finished run 'nope'"),
        (["combine", "nope", "nope2"], "no finished run 'nope'"),
        (["train", "--epochs", "0"], "--epochs"),
        (["ensemble", "--model", "tiny", "--members", "2", "--member", "2"], "--member must be between 0 and 1"),
        (["train", "--epochs", "1", "--init-from", "tiny-0000000000"], "no finished run 'tiny-0000000000' to start from"),
        (["train", "--epochs", "1", "--teacher", "tiny-0000000000"], "no finished run 'tiny-0000000000' to distil from"),
        (["train", "--epochs", "1", "--teacher", "x", "--distill-weight", "1.5"], "--distill-weight must be between 0 and 1"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, message):
    done = _cli(*args, "--runs", str(tmp_path))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_training_can_start_from_a_finished_runs_weights(demo_small, runs_dir):
    """With a zero learning rate the started run keeps the weights it was given; its id differs."""

    store = RunStore(runs_dir, shipped=[])
    start = store.train(TINY, demo_small)
    frozen = replace(TINY, epochs=1, learning_rate=0.0, init_from=start.id)
    tuned = store.train(frozen, demo_small)
    assert tuned.id != start.id and tuned.config["init_from"] == start.id
    # its curve: the start's 2 epochs, then its own as epoch 3; its history and metrics: its own epoch only
    curve = tuned.curve()
    assert curve["epoch"].tolist() == [1, 2, 3] and len(tuned.history()) == 1 and tuned.metrics["epochs_run"] == 1
    pd.testing.assert_frame_equal(curve.iloc[:2], start.history())
    assert curve["val_accuracy"].iloc[2] == tuned.history()["val_accuracy"].iloc[0]
    assert len(store.combine([start.id, tuned.id]).history()) == 2  # the members' mean over the epochs both have
    from dashboard.tables import run_table
    assert run_table([tuned])["epochs"].tolist() == [3] and " · 2+1 ep [" in run_table([tuned])["run"].iloc[0]
    conv = last_conv_layer(start.model())
    np.testing.assert_array_equal(tuned.model().get_layer(conv).get_weights()[0], start.model().get_layer(conv).get_weights()[0])
    with pytest.raises(ValueError, match="the layers differ"):
        store.train(replace(frozen, model=ModelSpec("dnn", dnn_match="tiny")), demo_small)
    with pytest.raises(ValueError, match="another validation split.*trained on this run's validation faces"):
        store.train(replace(frozen, seed=1), demo_small)  # its start learnt ~90% of seed 1's validation faces


def test_a_run_started_from_weights_on_other_data_keeps_their_normaliser(demo_small, runs_dir):
    """Fine-tuning on darker faces: the start weights come with the grey-level statistics they were trained on
    (the first layer's input stays as it learnt it), not the new data's."""
    from core.models import input_stats

    store = RunStore(runs_dir, shipped=[])
    start = store.train(TINY, demo_small)
    darker = replace(demo_small, images=demo_small.images // 2, source="darker")
    tuned = store.train(replace(TINY, epochs=1, learning_rate=0.0, init_from=start.id), darker)
    assert input_stats(tuned.model()) == pytest.approx(input_stats(start.model()))
    assert input_stats(start.model())[0] > 1.5 * float(darker.images.mean())  # the new data's would differ
    store.train(replace(TINY, epochs=1, learning_rate=0.0, init_from=start.id, seed=1), darker)  # other data: any split


def test_training_can_start_from_an_unfinished_runs_checkpoint_at_a_named_epoch(demo_small, tmp_path):
    """``RUN@EPOCH``: an unfinished run's last.keras, or its carried float16 weights;
    a checkpoint at another epoch is refused (the new run's id would lie)."""
    store = RunStore(tmp_path / "runs", shipped=[])
    workdir = _stopped_after_epoch_2(TrainConfig(model=ModelSpec("tiny"), epochs=3, batch_size=32), store, demo_small)
    last = keras.models.load_model(workdir / "last.keras", safe_mode=True)
    conv = last_conv_layer(last)
    checkpoint = last.get_layer(conv).get_weights()[0]
    frozen = replace(TINY, epochs=1, learning_rate=0.0, init_from=f"{workdir.name}@2")
    started = store.train(frozen, demo_small)
    assert started.config["init_from"] == f"{workdir.name}@2"
    pd.testing.assert_frame_equal(started.curve().iloc[:2], read_history(workdir))  # the checkpoint's 2 epochs
    np.testing.assert_array_equal(started.model().get_layer(conv).get_weights()[0], checkpoint)

    moved = RunStore(tmp_path / "other", shipped=[])
    carry(workdir, moved.root)
    from_carried = moved.train(frozen, demo_small).model().get_layer(conv).get_weights()[0]
    np.testing.assert_allclose(from_carried, checkpoint, rtol=1e-3, atol=1e-6)  # float16 kernels
    for ref, seed, message in [(f"{workdir.name}@3", 0, "is at epoch 2, not 3"), (f"{workdir.name}@x", 0, "RUN@EPOCH"),
                               ("tiny-0000000000@2", 0, "RUN@EPOCH"), (f"{workdir.name}@2", 1, "another validation split")]:
        with pytest.raises(ValueError, match=message):
            store.train(replace(frozen, init_from=ref, seed=seed), demo_small)


def test_distill_targets_mix_the_label_and_the_teacher():
    labels = np.array([0, 3])
    teacher = np.full((2, 7), 1 / 7, dtype=np.float32)
    np.testing.assert_allclose(distill_targets(labels, teacher, 0.0), np.eye(7)[labels])
    np.testing.assert_allclose(distill_targets(labels, teacher, 1.0), teacher)
    mixed = distill_targets(labels, teacher, 0.25)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    assert mixed[1, 3] == pytest.approx(0.75 + 0.25 / 7)
    with pytest.raises(ValueError, match="between 0 and 1"):
        distill_targets(labels, teacher, 1.5)


def _always_happy() -> "keras.Model":
    """A teacher that answers Happy (class 3) to every face, whatever it is."""
    import keras

    face = keras.Input((48, 48, 1))
    logits = keras.layers.Dense(7, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(
        [0, 0, 0, 20, 0, 0, 0]))(keras.layers.Flatten()(face))
    return keras.Model(face, keras.layers.Softmax()(logits))


@pytest.mark.parametrize("weight, all_happy", [(1.0, True), (0.0, False)])
def test_a_distilled_student_learns_the_teachers_answers(demo_small, tmp_path, weight, all_happy):
    """Targets wholly from a teacher that always says Happy make a student that always says Happy;
    with the teacher's weight at 0 the labels rule (the demo classes are balanced)."""

    config = replace(TINY, epochs=3, learning_rate=3e-3, teacher="always-happy", distill_weight=weight)
    result = fit(config, demo_small, tmp_path / "student", teacher=_always_happy())
    predicted = result.model.predict(result.val.images[..., None].astype(np.float32), verbose=0).argmax(axis=1)
    assert bool((predicted == 3).all()) is all_happy


def test_a_teacher_must_share_the_students_validation_split(demo_small, runs_dir):

    store = RunStore(runs_dir, shipped=[])
    teacher = store.train(replace(TINY, epochs=1), demo_small)
    student = replace(TINY, epochs=1, teacher=teacher.id)
    with pytest.raises(ValueError, match="another validation split"):
        store.train(replace(student, val_fraction=0.2), demo_small)
    with pytest.raises(ValueError, match=f"{teacher.id} was trained on other data"):
        store.train(student, make_demo(n_per_class=4, test_per_class=1, seed=9))
    distilled = store.train(student, demo_small)
    assert distilled.config["teacher"] == teacher.id and distilled.config["distill_weight"] == 0.5
    assert distilled.id != store.train(replace(TINY, epochs=1), demo_small).id


def test_shipped_runs_keep_their_ids():
    """Config fields added later stay out of the hash at their default: shipped run ids still match their configs."""
    for folder in sorted((ROOT / "models").glob("*/*")):
        config = json.loads((folder / "config.json").read_text())
        if config.get("kind") != "single":
            continue
        fingerprint = json.loads((folder / "metrics.json").read_text())["data"]["fingerprint"]
        stored = {k: v for k, v in config.items() if k not in ("kind", "label")}
        assert RunStore.run_id(TrainConfig.from_dict(stored).to_dict(), fingerprint) == folder.name


def _stopped_after_epoch_2(config: TrainConfig, store: RunStore, data) -> Path:
    """The folder of ``config``'s run in ``store`` as a training killed after its second epoch leaves it."""
    workdir = store.root / store.run_id(config.to_dict(), data.fingerprint())
    fit(TrainConfig(**{**config.__dict__, "epochs": 2}), data, workdir)
    (workdir / "config.json").write_text(json.dumps({**config.to_dict(), "kind": "single", "label": "tiny"}))
    return workdir


def test_a_bf16_run_goes_on_in_float32_as_the_same_run_with_its_optimiser_state(demo_small, tmp_path):
    """``--compute float32``: a --bf16 run resumed on a CPU that would emulate bfloat16."""
    config = TrainConfig(model=ModelSpec("tiny"), epochs=3, batch_size=32, optimizer="adamw", schedule="cosine",
                         mixed_precision=True)
    store = RunStore(tmp_path / "runs", shipped=[])
    workdir = _killed_after_epoch_2(config, store, demo_small)
    saved = keras.models.load_model(workdir / "last.keras", safe_mode=True)
    assert compute_policy(saved) == "mixed_bfloat16"
    train, _ = training_split(demo_small, config)
    moved = with_policy(saved, config, train, "float32")
    assert compute_policy(moved) == "float32" and moved.get_layer("logits").dtype_policy.name == "float32"
    for ours, theirs in zip(moved.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert int(moved.optimizer.iterations) == int(saved.optimizer.iterations) > 0
    for ours, theirs in zip(moved.optimizer.variables, saved.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))

    run = store.train(config, demo_small, policy="float32")
    history = run.history()
    assert run.path == workdir and history["epoch"].tolist() == [1, 2, 3]
    assert history["compute"].tolist() == ["mixed_bfloat16", "mixed_bfloat16", "float32"]
    unbroken = RunStore(tmp_path / "unbroken", shipped=[]).train(config, demo_small).history()
    np.testing.assert_allclose(history["learning_rate"], unbroken["learning_rate"], rtol=1e-6)  # the schedule went on


def test_snapshot_of_an_unfinished_training(demo_small, tmp_path):
    """The best checkpoint so far becomes a finished run; the training itself can still resume."""
    config = TrainConfig(model=ModelSpec("tiny"), epochs=5, batch_size=32)
    store = RunStore(tmp_path / "runs", shipped=[])
    workdir = _stopped_after_epoch_2(config, store, demo_small)
    snap = RunStore(tmp_path / "shipped", shipped=[]).snapshot(workdir, demo_small)
    assert snap.id != workdir.name and "epoch 2 of 5" in snap.label
    assert snap.metrics["epochs_run"] == 2 and snap.metrics["test"]["n"] == 70
    assert (workdir / "last.keras").exists() and not (workdir / "metrics.json").exists()
    resumed = store.train(config, demo_small)
    assert resumed.path == workdir and resumed.history()["epoch"].tolist() == [1, 2, 3, 4, 5]
    packed = RunStore(tmp_path / "shipped", shipped=[]).pack(snap.id, demo_small)  # a snapshot packs like any run
    assert packed.metrics["stored_as"] == "float16" and packed.model().count_params() == snap.metrics["params"]["trainable"] + snap.metrics["params"]["non_trainable"]


def test_a_run_carried_without_best_keras_resumes_and_finishes(demo_small, tmp_path):
    """checkpoints/ carries an unfinished run as config.json, history.csv and last.keras only (README).
    Its best epoch so far had its weights left behind: the finished run reports the epoch it keeps."""
    config = TrainConfig(model=ModelSpec("tiny"), epochs=3, batch_size=32)
    store = RunStore(tmp_path / "runs", shipped=[])
    workdir = _stopped_after_epoch_2(config, store, demo_small)
    (workdir / "best.keras").unlink()
    (workdir / BEST_EPOCH).unlink(missing_ok=True)
    history = read_history(workdir)
    history.loc[0, "val_accuracy"] = 1.0  # an epoch no later one beats, whose weights stayed on the old machine
    history.to_csv(workdir / "history.csv", index=False)
    run = store.train(config, demo_small)
    assert run.path == workdir and run.history()["epoch"].tolist() == [1, 2, 3]
    assert run.metrics["epochs_run"] == 3 and run.metrics["test"]["n"] == 70
    assert run.metrics["best_epoch"] == 3  # the only epoch trained since the carry, not epoch 1
    assert run.metrics["val"]["accuracy"] == pytest.approx(run.history()["val_accuracy"].iloc[2], abs=1e-6)
    assert not (workdir / BEST_EPOCH).exists()


def test_a_kill_between_best_keras_and_best_json_is_not_mislabelled(demo_small, tmp_path):
    """best.json names its best.keras by digest: new weights under an old best.json are the unrecorded next epoch."""
    config = TrainConfig(model=ModelSpec("tiny"), epochs=3, batch_size=32)
    store = RunStore(tmp_path / "runs", shipped=[])
    workdir = _stopped_after_epoch_2(config, store, demo_small)
    history = read_history(workdir)
    named = best_epoch(workdir, history)
    assert named in (1, 2) and json.loads((workdir / BEST_EPOCH).read_text())["sha256"] == file_digest(workdir / "best.keras")
    model = keras.models.load_model(workdir / "last.keras", safe_mode=True)
    model.set_weights([w + 0.01 for w in model.get_weights()])
    save_atomic(model, workdir / "best.keras")  # as if epoch 3 was saved as best, then the process killed
    assert file_digest(workdir / "best.keras") != json.loads((workdir / BEST_EPOCH).read_text())["sha256"]
    assert best_epoch(workdir, history) == 3
    run = store.train(config, demo_small)  # epoch 3 is redone and, ranked against itself, kept as best
    assert run.metrics["best_epoch"] == 3
    assert run.metrics["val"]["accuracy"] == pytest.approx(run.history()["val_accuracy"].iloc[2], abs=1e-6)


class _Killed(Exception):
    pass


def _killed_after_epoch_2(config: TrainConfig, store: RunStore, data) -> Path:
    """The folder of ``config``'s run in ``store`` as a process killed once its second epoch is saved leaves it
    (unlike ``_stopped_after_epoch_2``, ``fit`` runs the full schedule, so the optimiser state is the real one)."""
    workdir = store.root / store.run_id(config.to_dict(), data.fingerprint())
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({**config.to_dict(), "kind": "single", "label": "tiny"}))
    with pytest.raises(_Killed):
        fit(config, data, workdir, progress=_kill_after_epoch_2)
    return workdir


def _kill_after_epoch_2(tick) -> None:
    """A ``progress`` callback that stops a training as a killed process would, once epoch 2 is saved."""
    if tick.epoch == 1 and "val_accuracy" in tick.logs:
        raise _Killed


def test_a_carried_run_resumes_from_its_weights_where_its_schedule_stopped(demo_small, tmp_path):
    """``carry`` keeps config, history and float16 weights; copied into another store,
    the same training resumes with the learning rate of an unbroken run (README)."""
    config = TrainConfig(model=ModelSpec("tiny"), epochs=4, batch_size=32, optimizer="adamw", schedule="cosine", warmup_epochs=1)
    store = RunStore(tmp_path / "runs", shipped=[])
    workdir = _killed_after_epoch_2(config, store, demo_small)
    carried = carry(workdir, tmp_path / "repo")
    best_not_last = [CARRIED_BEST] if best_epoch(workdir, read_history(workdir)) == 1 else []
    assert sorted(p.name for p in carried.iterdir()) == sorted(["config.json", "history.csv", CARRIED_WEIGHTS, BEST_EPOCH,
                                                                *best_not_last])
    with pytest.raises(ValueError, match="into its own folder"):
        carry(workdir, store.root)  # would swap the live run's checkpoints for the carried copy
    assert (workdir / "last.keras").exists()
    last = keras.models.load_model(workdir / "last.keras", safe_mode=True).get_weights()
    for ours, theirs in zip(read_packed(carried / CARRIED_WEIGHTS)[2], last, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-6)

    moved = RunStore(tmp_path / "other", shipped=[])
    shutil.copytree(carried, moved.root / carried.name)
    resumed = moved.train(config, demo_small).history()
    unbroken = store.train(config, demo_small).history()  # from last.keras, optimiser state and all
    assert resumed["epoch"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(resumed.iloc[:2], unbroken.iloc[:2])
    np.testing.assert_allclose(resumed["learning_rate"], unbroken["learning_rate"], rtol=1e-5)
    assert not any((moved.root / carried.name / name).exists() for name in (CARRIED_WEIGHTS, CARRIED_BEST))  # dropped
    empty = _cli("carry", str(tmp_path / "nope"), str(tmp_path / "repo"))
    assert empty.returncode == 2 and empty.stderr.strip() == f"error: {tmp_path / 'nope'}: no finished epoch to carry"


def test_a_carried_run_with_no_epoch_left_finishes_from_its_weights(demo_small, tmp_path):
    """Carried just after its last epoch (no best.keras, no last.keras): the run finishes from its best epoch's
    carried weights, it does not crash."""
    store = RunStore(tmp_path / "runs", shipped=[])
    workdir = _stopped_after_epoch_2(TINY, store, demo_small)  # all of TINY's 2 epochs
    moved = RunStore(tmp_path / "other", shipped=[])
    carried = carry(workdir, moved.root)
    run = moved.train(TINY, demo_small)
    best = best_epoch(workdir, read_history(workdir))
    assert run.path == carried and run.metrics["epochs_run"] == 2 and run.metrics["best_epoch"] == best
    best_model = keras.models.load_model(workdir / "best.keras", safe_mode=True)
    conv = last_conv_layer(best_model)
    np.testing.assert_allclose(run.model().get_layer(conv).get_weights()[0], best_model.get_layer(conv).get_weights()[0],
                               rtol=1e-3, atol=1e-6)  # the carried float16 kernels


def test_a_carried_run_keeps_its_best_epoch_when_it_is_not_the_last(demo_small, tmp_path):
    """Moved to a new machine, a run whose best epoch so far is not its last still ends
    with that epoch's weights when no later epoch beats it (``carry`` keeps them)."""
    config = TrainConfig(model=ModelSpec("tiny"), epochs=3, batch_size=32)
    store = RunStore(tmp_path / "runs", shipped=[])
    workdir = _killed_after_epoch_2(config, store, demo_small)
    history = read_history(workdir)
    history.loc[0, "val_accuracy"] = 1.0  # epoch 1 unbeatable: the finished run must answer with its weights
    history.to_csv(workdir / "history.csv", index=False)
    first = keras.models.load_model(workdir / "best.keras", safe_mode=True)
    first.set_weights([w * 0.5 for w in first.get_weights()])  # epoch 1's weights: unlike epoch 2's
    save_atomic(first, workdir / "best.keras")
    (workdir / BEST_EPOCH).write_text(json.dumps({"epoch": 1, "sha256": file_digest(workdir / "best.keras")}))

    moved = RunStore(tmp_path / "other", shipped=[])
    carried = carry(workdir, moved.root)
    assert (carried / CARRIED_BEST).exists() and json.loads((carried / BEST_EPOCH).read_text()) == {"epoch": 1}
    run = moved.train(config, demo_small)
    assert run.metrics["epochs_run"] == 3 and run.metrics["best_epoch"] == 1
    val = training_split(demo_small, config)[1]
    expected = predict_probs(inference_model(first, config.model), val.images)
    np.testing.assert_allclose(run.predictions()["val_probs"], expected, atol=2e-3)  # float16 kernels


def test_a_kill_while_finishing_keeps_the_checkpoints(demo_small, tmp_path, monkeypatch):
    """The checkpoints go only after metrics.json is written: killed at that write, the run resumes, it is not retrained."""
    import core.runs

    store = RunStore(tmp_path / "runs", shipped=[])
    real_write = core.runs.write_text_atomic

    def killed_at_metrics(path, text):
        if Path(path).name == "metrics.json":
            raise _Killed
        real_write(path, text)

    monkeypatch.setattr(core.runs, "write_text_atomic", killed_at_metrics)
    with pytest.raises(_Killed):
        store.train(TINY, demo_small)
    workdir = store.root / store.run_id(TINY.to_dict(), demo_small.fingerprint())
    assert (workdir / "last.keras").exists() and (workdir / "best.keras").exists()
    history = read_history(workdir)
    monkeypatch.setattr(core.runs, "write_text_atomic", real_write)
    run = store.train(TINY, demo_small)
    pd.testing.assert_frame_equal(run.history(), history)  # nothing retrained


def test_a_kill_while_packing_leaves_the_run_whole(demo_small, runs_dir, monkeypatch):
    """The float32 file goes only after the metrics name the packed one: killed before, the run is as it was."""
    store = RunStore(runs_dir, shipped=[])
    run = store.train(TINY, demo_small)

    def killed(*args, **kwargs):
        raise _Killed

    monkeypatch.setattr(store, "_finish", killed)
    with pytest.raises(_Killed):
        store.pack(run.id, demo_small)
    again = RunStore(runs_dir, shipped=[]).get(run.id)
    assert again.weights == "float32" and (again.path / "model.keras").exists()
    assert again.model().count_params() == run.model().count_params()
    monkeypatch.undo()
    assert store.pack(run.id, demo_small).weights == "float16" and not (run.path / "model.keras").exists()


def test_a_run_started_from_a_checkpoint_resumes_after_that_checkpoint_moved_on(demo_small, tmp_path):
    """``RUN@EPOCH`` names the start weights once: resuming does not look for them again (the source trained on)."""
    store = RunStore(tmp_path / "runs", shipped=[])
    source_config = TrainConfig(model=ModelSpec("tiny"), epochs=3, batch_size=32)
    workdir = _stopped_after_epoch_2(source_config, store, demo_small)
    annealing = replace(TINY, epochs=3, init_from=f"{workdir.name}@2")
    with pytest.raises(_Killed):
        store.train(annealing, demo_small, progress=_kill_after_epoch_2)
    store.train(source_config, demo_small)  # the source goes on to its epoch 3
    resumed = store.train(annealing, demo_small)
    assert resumed.history()["epoch"].tolist() == [1, 2, 3]
    assert resumed.curve()["epoch"].tolist() == [1, 2, 3, 4, 5]  # still the source's first 2 epochs, then its own


def test_a_run_being_trained_by_another_process_is_refused(demo_small, tmp_path):
    """Two writers of one run folder would interleave checkpoints: the second is refused while the first holds the lock."""
    from filelock import FileLock

    store = RunStore(tmp_path / "runs", shipped=[])
    path = store.root / store.run_id(TINY.to_dict(), demo_small.fingerprint())
    path.mkdir(parents=True)
    with FileLock(path / TRAINING_LOCK):  # as the other process holds it
        assert training_now(path)
        with pytest.raises(RunBusy, match=f"run {path.name} is being trained by another process"):
            store.train(TINY, demo_small)
        assert not (path / "history.csv").exists()
    assert not training_now(path)
    assert store.train(TINY, demo_small).path == path


def test_a_resumed_training_does_not_replay_epoch_1s_batches(demo_small, tmp_path, monkeypatch):
    """The first epoch after a resume gets a new batch order; a fresh run's order is reproducible."""
    first_batches = []

    def recording(images, labels, batch_size, shuffle, seed=0):
        dataset = make_dataset(images, labels, batch_size, shuffle, seed)
        if shuffle:
            first_batches.append(next(iter(dataset))[0].numpy())
        return dataset

    monkeypatch.setattr("core.training.make_dataset", recording)
    one_epoch = replace(TINY, epochs=1)
    fit(one_epoch, demo_small, tmp_path / "a")
    fit(one_epoch, demo_small, tmp_path / "b")
    fit(replace(TINY, epochs=2), demo_small, tmp_path / "a")  # resumes after epoch 1
    fresh, again, resumed = first_batches
    np.testing.assert_array_equal(fresh, again)
    assert not np.array_equal(fresh, resumed)
    # A fresh run shuffles with its own seed, as the shipped runs were trained.
    train, _ = training_split(demo_small, TINY)
    keras.utils.set_random_seed(TINY.seed)  # tf.data's shuffle combines it with the op's seed
    as_shipped = make_dataset(train.images, train.labels, TINY.batch_size, shuffle=True, seed=TINY.seed)
    np.testing.assert_array_equal(fresh, next(iter(as_shipped))[0].numpy())


def test_estimated_moments_are_the_mean_gradient_and_squared_gradient(demo_small):
    """One batch: Adam's momentum is its gradient, the velocity that gradient squared (not zeros)."""
    config = TrainConfig(model=ModelSpec("tiny", augment=None), optimizer="adamw")
    train, _ = training_split(demo_small, config)
    model = build_compiled(config, train)
    estimate_moments(model, make_dataset(train.images[:32], train.labels[:32], 32, shuffle=False), batches=1)
    momentums = [np.asarray(m) for m in model.optimizer._momentums]
    velocities = [np.asarray(v) for v in model.optimizer._velocities]
    assert len(momentums) == len(model.trainable_variables) and all(np.abs(m).max() > 0 for m in momentums)
    for m, v in zip(momentums, velocities):
        np.testing.assert_allclose(v, np.square(m), rtol=1e-4, atol=1e-12)


def test_pack_stores_float16_kernels_and_remeasures(demo_small, runs_dir):
    """A packed ensemble: members' kernels float16 on disk, models compute as before (to float16
    rounding), predictions and metrics re-measured with the packed weights, float32 figures kept."""
    from core.evaluation import predict_probs
    from core.packing import FILENAMES

    FILENAME = FILENAMES["float16"]

    store = RunStore(runs_dir, shipped=[])
    ens = store.ensemble(TINY, 2, demo_small)
    member = RunStore(runs_dir, shipped=[]).get(ens.member_paths()[0].name)
    val = training_split(demo_small, member.train_config())[1]
    before_probs, before_size = predict_probs(member.model(), val.images), (member.path / "model.keras").stat().st_size
    before = ens.metrics

    packed = store.pack(ens.id, demo_small)
    assert packed.metrics["stored_as"] == "float16"
    assert packed.metrics["float32"]["test"] == before["test"]["accuracy"]
    for path in packed.member_paths():
        assert (path / FILENAME).exists() and not (path / "model.keras").exists()
    with np.load(member.path / FILENAME) as npz:
        dtypes = {npz[k].ndim >= 2: npz[k].dtype for k in npz.files if k.startswith("w")}
    assert dtypes == {True: np.float16, False: np.float32}  # kernels halved; biases, BatchNorm stats kept
    assert (member.path / FILENAME).stat().st_size < 0.6 * before_size

    model = RunStore(runs_dir, shipped=[]).get(member.id).model()
    after_probs = predict_probs(model, val.images)
    np.testing.assert_allclose(after_probs, before_probs, atol=2e-2)
    assert not np.array_equal(after_probs, before_probs)  # really the rounded weights
    np.testing.assert_allclose(RunStore(runs_dir, shipped=[]).get(member.id).predictions()["val_probs"], after_probs, atol=1e-5)
    report = evaluate(packed, demo_small, split="PublicTest")
    assert report["average"]["accuracy"] == pytest.approx(packed.metrics["rules"]["average"]["test"]["accuracy"], abs=1e-6)
    assert store.pack(ens.id, demo_small).metrics == packed.metrics  # packing twice changes nothing
    elsewhere = RunStore(runs_dir.parent / "elsewhere", shipped=[runs_dir])  # e.g. a new ensemble with a shipped member
    assert elsewhere.pack(member.id, demo_small).path == member.path  # packed already: found, nothing written
    from dashboard.tables import run_table

    assert run_table([packed, RunStore(runs_dir, shipped=[]).get(member.id)])["weights"].tolist() == ["float16"] * 2

    from core.demo import make_demo

    with pytest.raises(ValueError, match=f"run {ens.id} was trained on other data"):
        store.pack(ens.id, make_demo(n_per_class=5, test_per_class=2, seed=9))


def test_pack_int8_quantizes_each_output_channel(demo_small, runs_dir):
    """int8 kernels: a quarter of the bytes, each output unit within half a step of its float32
    weights, the model's probabilities close to before (and really changed); a float16 run can
    become int8, keeping both earlier accuracies, but an int8 run cannot become float16."""
    from core.evaluation import predict_probs
    from core.packing import FILENAMES, quantize_int8

    kernel = np.array([[0.5, -0.001], [-1.0, 0.002], [0.25, 0.0]], np.float32)  # units of very different sizes
    codes, scale = quantize_int8(kernel)
    assert codes.dtype == np.int8 and codes.tolist() == [[64, -64], [-127, 127], [32, 0]]
    assert np.abs(codes * scale - kernel).max(axis=0) == pytest.approx(scale / 2, rel=0.02)  # small unit keeps resolution
    assert quantize_int8(np.zeros((2, 3), np.float32))[0].tolist() == [[0] * 3] * 2  # a dead unit: no division by zero

    store = RunStore(runs_dir, shipped=[])
    dnn = store.train(replace(TINY, epochs=1, model=ModelSpec("dnn", dnn_match="tiny")), demo_small)
    val = training_split(demo_small, dnn.train_config())[1]
    before_probs, before_size = predict_probs(dnn.model(), val.images), (dnn.path / "model.keras").stat().st_size
    packed = store.pack(dnn.id, demo_small, "int8")
    assert packed.weights == "int8" and packed.metrics["float32"]["val"] == dnn.metrics["val"]["accuracy"]
    assert not (dnn.path / "model.keras").exists() and (dnn.path / FILENAMES["int8"]).stat().st_size < 0.35 * before_size
    with np.load(dnn.path / FILENAMES["int8"]) as npz:
        assert {npz[k].dtype for k in npz.files if k.startswith("w") and npz[k].ndim >= 2} == {np.dtype(np.int8)}
    after_probs = predict_probs(RunStore(runs_dir, shipped=[]).get(dnn.id).model(), val.images)
    np.testing.assert_allclose(after_probs, before_probs, atol=2e-2)
    assert not np.array_equal(after_probs, before_probs)
    assert store.pack(dnn.id, demo_small, "int8").metrics == packed.metrics  # packing twice changes nothing

    cnn = store.pack(store.train(TINY, demo_small).id, demo_small)
    cnn8 = store.pack(cnn.id, demo_small, "int8")
    assert cnn8.weights == "int8" and [p.name for p in cnn8.path.glob("model.*")] == [FILENAMES["int8"]]
    assert cnn8.metrics["float32"] == cnn.metrics["float32"] and cnn8.metrics["float16"]["val"] == cnn.metrics["val"]["accuracy"]
    with pytest.raises(ValueError, match=f"run {cnn.id} is packed as int8 already"):
        store.pack(cnn.id, demo_small, "float16")


def test_the_shipped_cnn_is_member_0_of_the_deep_ensemble_of_its_flags():
    """`ensemble --no-resample` with ferlab's own flags starts from the shipped ferlab, not a retrained twin."""
    from core.__main__ import build_parser, config_from_args
    from core.runs import member_ids

    folder = ROOT / "models" / "fer" / "ferlab-5f9c8a749f"
    fingerprint = json.loads((folder / "metrics.json").read_text())["data"]["fingerprint"]
    flags = ("ensemble --model ferlab --members 5 --no-resample --epochs 50 --optimizer adamw --lr 1e-3 "
             "--weight-decay 0.05 --schedule cosine --warmup 2 --label-smoothing 0.1 --erasing 0.5 --bf16")
    ids = member_ids(config_from_args(build_parser().parse_args(flags.split())), 5, fingerprint)
    assert ids[0] == folder.name and len(set(ids)) == 5


def test_native_bfloat16_reads_the_cpu_flags():
    from core.training import native_bfloat16

    assert native_bfloat16("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n") is False
    assert native_bfloat16("flags\t\t: avx2 avx512f avx512_bf16\n") is True
    assert native_bfloat16("flags\t\t: avx2 amx_tile amx_bf16\n") is True
    assert native_bfloat16("Processor\t: ARMv7\n") is None  # no flags line: cannot tell


def test_ensemble_members_train_in_the_compute_policy_asked_for(demo_small, runs_dir):
    """``--compute float32`` reaches every member (``ensemble``, ``ensemble --member``), not only ``train``."""
    store = RunStore(runs_dir, shipped=[])
    config = replace(TINY, epochs=1, mixed_precision=True)
    member = store.train_member(config, 2, 1, demo_small, policy="float32")
    ens = store.ensemble(config, 2, demo_small, policy="float32")
    assert member.id == ens.config["members"][1]
    assert [Run(p).history()["compute"].tolist() for p in ens.member_paths()] == [["float32"], ["float32"]]


def test_a_member_is_deleted_only_after_its_ensemble_and_an_ensemble_missing_one_is_not_listed(demo_small, runs_dir):
    store = RunStore(runs_dir, shipped=[])
    ens = store.ensemble(replace(TINY, epochs=1), 2, demo_small)
    member = ens.config["members"][0]
    with pytest.raises(ValueError, match=f"run {member} is a member of {ens.id}: delete the ensemble first"):
        store.delete(member)
    shutil.rmtree(runs_dir / member)  # by hand
    assert [r.id for r in store.list()] == [ens.config["members"][1]]
    store.delete(ens.id)
    store.delete(ens.config["members"][1])
    assert store.list() == []


def test_cli_warns_when_bf16_would_be_emulated(tmp_path):
    """The warning comes before the data is read, so a missing file is enough to see it."""
    from core.training import native_bfloat16

    proc = _cli("train", "--data", str(tmp_path / "missing.csv"), "--model", "tiny", "--bf16", "--runs", str(tmp_path))
    assert proc.returncode != 0 and "missing.csv" in proc.stderr
    assert ("warning: bfloat16 on a CPU without native bfloat16" in proc.stderr) == (native_bfloat16() is False)
    for command in ("train", "ensemble"):  # an ensemble member resumed on such a CPU takes --compute too
        for args in ([], ["--bf16", "--compute", "float32"]):
            proc = _cli(command, "--data", str(tmp_path / "missing.csv"), "--model", "tiny", "--runs", str(tmp_path), *args)
            assert proc.returncode != 0 and "missing.csv" in proc.stderr and "warning: bfloat16" not in proc.stderr


def test_batches_for_other_backends_show_every_face_once_an_epoch_in_a_seeded_order():
    """``Batches`` is what JAX and PyTorch train from (no TensorFlow there): each
    epoch a new permutation, the same one for the same seed, every face with its label."""
    from core.training import Batches

    n = 10
    images = np.repeat(np.arange(n, dtype=np.uint8), 48 * 48).reshape(n, 48, 48)  # face i is all grey level i
    labels = np.arange(n) % 7

    def epoch(batches):
        seen = [batches[i] for i in range(len(batches))]
        x, y = np.concatenate([b[0] for b in seen]), np.concatenate([b[1] for b in seen])
        assert x.shape == (n, 48, 48, 1) and x.dtype == np.float32 and y.shape == (n, 7)
        rows = x[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(y.argmax(1), labels[rows])  # each face keeps its label
        return rows

    batches, twin = Batches(images, labels, 4, shuffle=True, seed=3), Batches(images, labels, 4, shuffle=True, seed=3)
    assert len(batches) == 3
    first = epoch(batches)
    assert sorted(first) == list(range(n)) and list(first) != list(range(n))
    np.testing.assert_array_equal(epoch(twin), first)
    batches.on_epoch_end()
    second = epoch(batches)
    assert sorted(second) == list(range(n)) and list(second) != list(first)
    assert list(epoch(Batches(images, labels, 4, shuffle=False, seed=3))) == list(range(n))
    soft = np.full((n, 7), 1 / 7, np.float32)
    np.testing.assert_array_equal(Batches(images, soft, 4, shuffle=False, seed=0)[0][1], soft[:4])


def test_the_cli_sets_each_augmentation_and_keeps_the_defaults_otherwise():
    from core.__main__ import build_parser, config_from_args
    from core.models import Augment

    parse = build_parser().parse_args
    assert config_from_args(parse(["train"])).model.augment == Augment()
    augment = config_from_args(parse("train --shift 0.2 --zoom 0.25 --erasing 0.5".split())).model.augment
    assert augment == Augment(shift=0.2, zoom=0.25, erasing=0.5)
    light = config_from_args(parse("train --rotation 0 --shear 0 --shift 0 --zoom 0".split())).model.augment
    assert light == Augment(rotation_deg=0, zoom=0, shift=0, shear=0) and light.flip
    nearest = config_from_args(parse("train --interpolation nearest".split()))
    assert nearest.model.augment == Augment(interpolation="nearest")
    assert nearest.to_dict()["model"]["augment"]["interpolation"] == "nearest"


def test_only_the_chief_worker_writes_into_the_runs_folder(tmp_path):
    from core.__main__ import runs_for_worker

    def where(task: dict, cluster: dict) -> Path:
        return runs_for_worker(tmp_path, "multiworker", json.dumps({"cluster": cluster, "task": task}))

    workers = {"worker": ["a:1", "b:1"]}
    assert where({"type": "worker", "index": 0}, workers) == tmp_path
    assert where({"type": "worker", "index": 1}, workers) == tmp_path / ".worker-1"
    with_chief = {"chief": ["c:1"], **workers}
    assert where({"type": "chief", "index": 0}, with_chief) == tmp_path
    assert where({"type": "worker", "index": 0}, with_chief) == tmp_path / ".worker-0"
    assert runs_for_worker(tmp_path, "default", json.dumps({"task": {"type": "worker", "index": 1}})) == tmp_path
    assert runs_for_worker(tmp_path, "multiworker", None) == tmp_path


@pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import jax"], capture_output=True).returncode != 0,
                    reason="jax is not installed (it is no requirement: GPU machines bring it)")
def test_the_cli_trains_under_the_jax_backend(tmp_path):
    """GPU machines may have JAX and no TensorFlow: ``core.training`` then feeds ``Batches``."""
    done = _cli("train", "--model", "tiny", "--epochs", "1", "--batch-size", "32", "--runs", str(tmp_path),
                env={"KERAS_BACKEND": "jax"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run = Run(next(p for p in tmp_path.iterdir() if (p / "metrics.json").exists()))
    assert run.metrics["val"]["n"] > 0 and len(run.history()) == 1


def test_early_stopping_stops_once_patience_epochs_pass_without_a_better_validation(tmp_path, demo_small):
    from core.training import HISTORY_COLUMNS, _EpochCheckpoint

    model = build_compiled(TINY, demo_small)
    callback = _EpochCheckpoint(tmp_path, pd.DataFrame(columns=HISTORY_COLUMNS), patience=2, policy="float32")
    callback.set_model(model)
    stops = []
    for epoch, val in enumerate([0.5, 0.6, 0.55, 0.6, 0.58]):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": val})
        stops.append(bool(model.stop_training))
    # peak at epoch 2 (a tie later is no gain): epochs 3 and 4 without gain -> stop after epoch 4
    assert stops == [False, False, False, True, True]


def test_every_lease_job_resamples_nearest_and_the_fallback_drops_every_affine_layer():
    """tools/gpu/lease.py: its flags for every job come last, so they override a job's own
    (the stronger-shift job included); without them each job still parses to its recipe."""
    import importlib.util

    from core.__main__ import build_parser, config_from_args
    from core.models import Augment

    spec = importlib.util.spec_from_file_location("lease", Path(__file__).parent.parent / "tools" / "gpu" / "lease.py")
    lease = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lease)
    parse = build_parser().parse_args

    configs = {name: config_from_args(parse(args)) for name, args in lease.jobs("ferlab-wide", True, []).items()}
    assert {c.model.augment.interpolation for c in configs.values()} == {"nearest"}
    assert configs["aug"].model.augment.shift == 0.2 and configs["m0"].model.augment.shift == Augment.shift
    assert configs["sgd"].optimizer == "sgd" and all(c.mixed_precision for c in configs.values())

    for name, args in lease.jobs("ferlab-wide", True, lease.NO_AFFINE).items():
        augment = config_from_args(parse(args)).model.augment
        assert (augment.rotation_deg, augment.zoom, augment.shift, augment.shear) == (0, 0, 0, 0), name
        assert augment.flip and augment.erasing == 0.5
