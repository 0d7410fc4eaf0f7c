"""core.figures: figure types, trace counts, and the numbers behind the charts."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from core.data import EMOTIONS
from core.figures import (
    ablation_chart,
    class_distribution,
    confusion_heatmap,
    epoch_times,
    method_ranking,
    normalize_rows,
    per_class_bars,
    sample_grid,
    sample_mosaic,
    top_confusions,
    training_curves,
    upscale,
)


def _history(epochs: int, offset: float = 0.0) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    return pd.DataFrame({"epoch": e, "loss": 2 / e + offset, "accuracy": 1 - 1 / (e + 1), "val_loss": 2.2 / e,
                         "val_accuracy": 0.9 - 1 / (e + 1), "learning_rate": 1e-3, "seconds": 5.0 + e})


CONFUSION = np.array([[5, 2, 0, 0, 0, 0, 1],
                      [0, 0, 0, 0, 0, 0, 0],  # a class with no faces
                      [3, 0, 4, 0, 6, 0, 0],
                      [0, 0, 0, 9, 0, 0, 0],
                      [0, 0, 6, 0, 7, 0, 2],
                      [0, 0, 1, 0, 0, 8, 0],
                      [1, 0, 0, 0, 2, 0, 10]])


def test_class_distribution_has_one_bar_trace_per_split_and_skips_unlabelled():
    labels = np.array([0, 0, 3, 3, 3, 6, -1])
    splits = np.array(["Training"] * 5 + ["PublicTest"] * 2)
    fig = class_distribution(labels, splits)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["PublicTest", "Training"]
    assert list(fig.data[1].y) == [2, 0, 0, 3, 0, 0, 0]
    assert list(fig.data[0].y) == [0, 0, 0, 0, 0, 0, 1]  # the -1 face is not counted
    assert list(fig.data[0].x) == list(EMOTIONS)


def test_sample_mosaic_puts_each_emotion_on_its_own_row():
    labels = np.repeat(np.arange(7), 3)
    images = np.repeat(labels * 30, 48 * 48).reshape(-1, 48, 48).astype(np.uint8)  # grey level = 30 * label
    mosaic = sample_mosaic(images, labels, per_class=4, seed=0, pad=2)
    assert mosaic.shape == (7 * 50, 4 * 50) and mosaic.dtype == np.uint8
    for row in range(7):
        assert mosaic[row * 50 + 10, 10] == 30 * row
        assert mosaic[row * 50 + 10, 3 * 50 + 10] == 255  # only 3 faces per class: 4th cell blank


def test_sample_grid_labels_rows_with_emotions_and_counts():
    labels = np.array([0, 3, 3, 6])
    images = np.zeros((4, 48, 48), np.uint8)
    fig = sample_grid(images, labels, per_class=2)
    ticks = list(fig.layout.yaxis.ticktext)
    assert ticks[0] == "Angry (1)" and ticks[3] == "Happy (2)" and ticks[1] == "Disgust (0)"
    assert len(fig.data) == 1


def test_upscale_repeats_pixels():
    image = np.array([[1, 2], [3, 4]], np.uint8)
    assert upscale(image, 2).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_training_curves_four_traces_per_run_train_dashed_val_solid_one_colour_per_run():
    fig = training_curves({"a": _history(5), "b": _history(3, 0.1)})
    assert len(fig.data) == 8
    by_run = {name: [t for t in fig.data if t.name == name] for name in ("a", "b")}
    for traces in by_run.values():
        assert len({t.line.color for t in traces}) == 1
        assert sorted(t.line.dash for t in traces) == ["dash", "dash", "solid", "solid"]
        assert sum(bool(t.showlegend) for t in traces) == 1  # one legend entry per run
    assert by_run["a"][0].line.color != by_run["b"][0].line.color
    assert len(by_run["b"][0].x) == 3


def test_epoch_times_one_trace_per_run():
    fig = epoch_times({"a": _history(4), "b": _history(2)})
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].y) == [6.0, 7.0, 8.0, 9.0]


def test_normalize_rows_sums_to_one_and_leaves_empty_rows_zero():
    shares = normalize_rows(CONFUSION)
    sums = shares.sum(axis=1)
    assert np.allclose(sums[[0, 2, 3, 4, 5, 6]], 1.0)
    assert sums[1] == 0.0
    assert shares[2, 4] == pytest.approx(6 / 13)


@pytest.mark.parametrize("normalized", [False, True])
def test_confusion_heatmap_labels_axes_annotates_and_makes_cells_clickable(normalized):
    fig = confusion_heatmap(CONFUSION, normalized)
    heat, clicks = fig.data
    assert isinstance(heat, go.Heatmap) and isinstance(clicks, go.Scatter)
    assert list(heat.x) == list(EMOTIONS) and list(heat.y) == list(EMOTIONS)
    assert fig.layout.xaxis.title.text == "predicted" and fig.layout.yaxis.title.text == "true"
    z = np.array(heat.z, dtype=float)
    if normalized:
        assert np.allclose(z.sum(axis=1)[[0, 2, 3, 4, 5, 6]], 1.0)
        assert heat.text[2][4] == "46%"
    else:
        assert np.array_equal(z, CONFUSION)
        assert heat.text[2][4] == "6"
    # one clickable marker per cell, at (predicted, true), carrying [true, predicted, count]
    assert len(clicks.x) == 49
    k = 2 * 7 + 4
    assert (clicks.y[k], clicks.x[k]) == ("Fear", "Sad")
    assert list(clicks.customdata[k]) == [2, 4, 6]


def test_top_confusions_are_off_diagonal_largest_first_with_stable_ties():
    top = top_confusions(CONFUSION, k=5)
    assert top == [(2, 4, 6), (4, 2, 6), (2, 0, 3), (0, 1, 2), (4, 6, 2)]
    assert all(t != p for t, p, _ in top)
    assert top_confusions(np.diag([3] * 7)) == []


def test_per_class_bars_three_traces_in_emotion_order():
    per_class = {name: {"precision": i / 10, "recall": i / 20, "f1": i / 15, "support": 3} for i, name in enumerate(EMOTIONS)}
    fig = per_class_bars(per_class)
    assert [t.name for t in fig.data] == ["precision", "recall", "f1"]
    assert list(fig.data[0].x) == list(EMOTIONS)
    assert fig.data[1].y[4] == pytest.approx(0.2)


def test_ablation_chart_one_trace_per_setting_in_given_order():
    table = pd.DataFrame({"arch": ["tiny", "tiny", "ferlab"], "setting": ["none", "normalisation only", "none"],
                          "val accuracy": [0.4, 0.5, 0.6]})
    fig = ablation_chart(table, value="val accuracy")
    assert [t.name for t in fig.data] == ["none", "normalisation only"]
    assert list(fig.data[0].x) == ["tiny", "ferlab"]


def test_best_models_rank_real_face_runs_first_and_name_each_data_set_once(tmp_path):
    """The shipped demo CNN scores higher on its toy test set than any FER2013 run: it must not top 'Best models'."""
    from pathlib import Path

    from core.runs import RunStore
    from dashboard.tables import best_first, run_table

    models = Path(__file__).resolve().parent.parent / "models"
    table = best_first(run_table(RunStore(tmp_path, shipped=[models / "demo", models / "fer"]).list()))
    assert table["real faces"].tolist() == sorted(table["real faces"], reverse=True) and table["real faces"].iloc[0]
    assert table[~table["real faces"]]["test accuracy"].max() > table[table["real faces"]]["test accuracy"].max()
    assert set(table["data"]) == {"demo", "fer2013.csv.gz"}  # one name per data set, whatever path trained it


def test_method_ranking_without_a_ranked_method_is_an_empty_figure():
    """A DNN with only Grad-CAM chosen: every gain is NaN, so there is nothing to rank (and no crash)."""
    columns = ("gain", "gain_sem", "sanity_spearman", "mass_ratio", "explain_s")
    table = pd.DataFrame({"title": ["Grad-CAM", "Grad-CAM++"]} | {c: [np.nan, np.nan] for c in columns})
    assert method_ranking(table, 0.5).data == ()
