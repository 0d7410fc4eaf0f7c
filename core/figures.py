"""Plotly figures and the small table helpers behind them, with no Streamlit in sight.

Why a separate module: the dashboard, a notebook and the tests all draw the
same charts, so the figures take plain arrays, tables and dicts and return a
``go.Figure`` that any of them can show, inspect or save.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.data import EMOTIONS

# One colour per run, the same run keeping its colour on every chart of a page.
PALETTE: tuple[str, ...] = tuple(px.colors.qualitative.Plotly)
_METRICS = ("precision", "recall", "f1")


def run_colour(index: int) -> str:
    """The colour of the ``index``-th run (cycles after 10 runs)."""
    return PALETTE[index % len(PALETTE)]


# --------------------------------------------------------------------- data


def class_distribution(labels: np.ndarray, splits: np.ndarray) -> go.Figure:
    """Faces per emotion, one bar group per split.

    FER2013 is badly imbalanced (Disgust has ~1/16 of Happy's faces); seeing the
    bars per split shows both the imbalance and whether the splits share it.
    Unlabelled faces (label -1) are left out: they belong to no emotion.
    """
    fig = go.Figure()
    for split in sorted(set(splits.tolist())):
        split_labels = labels[(splits == split) & (labels >= 0)]
        counts = np.bincount(split_labels, minlength=len(EMOTIONS))
        fig.add_bar(x=list(EMOTIONS), y=counts, name=split, text=counts, textposition="outside")
    fig.update_layout(
        barmode="group",
        xaxis_title="emotion",
        yaxis_title="faces",
        legend_title="split",
        margin=dict(t=30, b=10),
    )
    return fig


def sample_mosaic(images: np.ndarray, labels: np.ndarray, per_class: int = 8, seed: int = 0, pad: int = 2) -> np.ndarray:
    """(7*(48+pad), per_class*(48+pad)) uint8: one row of random faces per emotion.

    One image instead of 56 small ones: a single PNG travels to the browser,
    and rows line up with the emotion names. A class with fewer faces than
    ``per_class`` leaves its row's remaining cells white.
    """
    rng = np.random.default_rng(seed)
    cell = images.shape[1] + pad
    mosaic = np.full((len(EMOTIONS) * cell, per_class * cell), 255, dtype=np.uint8)
    for row in range(len(EMOTIONS)):
        members = np.flatnonzero(labels == row)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col, index in enumerate(chosen):
            mosaic[row * cell : row * cell + images.shape[1], col * cell : col * cell + images.shape[2]] = images[index]
    return mosaic


def sample_grid(images: np.ndarray, labels: np.ndarray, per_class: int = 8, seed: int = 0) -> go.Figure:
    """Random faces per emotion, rows named by emotion: what the classes look like."""
    mosaic = sample_mosaic(images, labels, per_class, seed)
    cell = mosaic.shape[0] // len(EMOTIONS)
    fig = px.imshow(mosaic, binary_string=True)  # a PNG inside the figure: small and crisp
    counts = np.bincount(labels[labels >= 0], minlength=len(EMOTIONS))
    fig.update_yaxes(
        tickvals=[cell * row + cell / 2 for row in range(len(EMOTIONS))],
        ticktext=[f"{name} ({count})" for name, count in zip(EMOTIONS, counts)],
    )
    fig.update_xaxes(showticklabels=False, showgrid=False)
    fig.update_yaxes(showgrid=False)
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10), height=60 * len(EMOTIONS) + 20)
    return fig


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """A face ``factor`` times larger by repeating pixels.

    Browsers smooth small images they stretch; 48x48 faces then look blurred,
    while repeated pixels show exactly what the model sees.
    """
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


# ----------------------------------------------------------------- training


def training_curves(histories: dict[str, pd.DataFrame]) -> go.Figure:
    """Loss and accuracy vs epoch for any set of runs, one colour per run.

    Train is dashed and validation solid, so over-fitting shows as the two lines
    of one colour drifting apart. Each run's four lines share a legend entry:
    clicking the run's name hides or shows all of them.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for index, (name, history) in enumerate(histories.items()):
        colour = run_colour(index)
        for col, metric in enumerate(("loss", "accuracy"), start=1):
            for prefix, dash, part in (("", "dash", "train"), ("val_", "solid", "validation")):
                fig.add_scatter(
                    x=history["epoch"],
                    y=history[prefix + metric],
                    mode="lines+markers",
                    line=dict(color=colour, dash=dash),
                    marker=dict(size=4),
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1 and part == "validation",
                    hovertemplate=f"{name}<br>{part} {metric} %{{y:.4f}}<br>epoch %{{x}}<extra></extra>",
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(
        legend_title="run (solid: validation, dashed: train)",
        margin=dict(t=40, b=10),
        hovermode="closest",
    )
    return fig


def epoch_times(histories: dict[str, pd.DataFrame]) -> go.Figure:
    """Seconds per epoch per run: the cost side of a comparison.

    The first epoch is usually slower (graph tracing), and a run that resumed
    after an interruption shows it again at the resumed epoch.
    """
    fig = go.Figure()
    for index, (name, history) in enumerate(histories.items()):
        fig.add_scatter(
            x=history["epoch"],
            y=history["seconds"],
            mode="lines+markers",
            name=name,
            line=dict(color=run_colour(index)),
        )
    fig.update_layout(xaxis_title="epoch", yaxis_title="seconds", margin=dict(t=30, b=10))
    return fig


def ablation_chart(table: pd.DataFrame, value: str = "val_accuracy") -> go.Figure:
    """Grouped bars: one group per architecture, one bar per (augment, normalize) setting.

    ``table`` has columns ``arch``, ``setting`` and ``value``; the bars answer
    "what did normalisation, then augmentation, add for this network?".
    """
    fig = go.Figure()
    for setting, rows in table.groupby("setting", sort=False):
        fig.add_bar(
            x=rows["arch"],
            y=rows[value],
            name=str(setting),
            text=[f"{v:.1%}" for v in rows[value]],
            textposition="outside",
        )
    fig.update_layout(
        barmode="group",
        yaxis=dict(title=value.replace("_", " "), tickformat=".0%", range=[0, 1.05]),
        legend_title="setting",
        margin=dict(t=30, b=10),
    )
    return fig


# --------------------------------------------------------------- evaluation


def normalize_rows(confusion: np.ndarray) -> np.ndarray:
    """Each true class's row divided by its total: the recall view of a confusion matrix.

    With imbalanced classes raw counts hide the small ones; per-row shares put
    Disgust on the same 0..1 scale as Happy. A class with no faces stays all 0.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)


def confusion_heatmap(confusion: np.ndarray, normalized: bool = False, title: str = "") -> go.Figure:
    """Heat map of a (7, 7) confusion matrix, rows true and columns predicted.

    Every cell carries its number, and an invisible marker sits on each cell
    centre: Plotly reports clicks on scatter points but not on heat-map cells,
    so the markers are what makes a cell selectable. Each marker's
    ``customdata`` is ``[true, predicted]``.
    """
    counts = np.asarray(confusion)
    z = normalize_rows(counts) if normalized else counts
    text = [[f"{v:.0%}" if normalized else str(int(v)) for v in row] for row in z]
    names = list(EMOTIONS)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1 if normalized else None,
            colorbar=dict(title="share of row" if normalized else "faces"),
            hoverinfo="skip",
        )
    )
    true_idx, pred_idx = np.meshgrid(range(len(names)), range(len(names)), indexing="ij")
    fig.add_scatter(
        x=[names[p] for p in pred_idx.ravel()],
        y=[names[t] for t in true_idx.ravel()],
        mode="markers",
        marker=dict(size=30, opacity=0.01, symbol="square", color="black"),
        customdata=np.stack([true_idx.ravel(), pred_idx.ravel(), counts.ravel()], axis=1),
        hovertemplate="true %{y}, predicted %{x}: %{customdata[2]} faces<br>click to see them<extra></extra>",
        showlegend=False,
    )
    fig.update_layout(
        title=title,
        xaxis=dict(title="predicted", side="bottom", constrain="domain"),
        yaxis=dict(title="true", autorange="reversed", scaleanchor="x"),
        margin=dict(t=40 if title else 10, b=10),
        height=520,
        clickmode="event+select",
    )
    return fig


def top_confusions(confusion: np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal cells as (true, predicted, count), largest first.

    These are the mistakes worth looking at; ties keep the emotion order so the
    list is the same on every rerun. Empty cells are never listed.
    """
    counts = np.asarray(confusion)
    cells = [(int(counts[t, p]), t, p) for t in range(len(counts)) for p in range(len(counts)) if t != p and counts[t, p] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(t, p, n) for n, t, p in cells[:k]]


def per_class_bars(per_class: dict[str, dict[str, float]]) -> go.Figure:
    """Precision, recall and F1 per emotion as grouped bars.

    Accuracy alone hides which emotions a model cannot tell apart; low recall
    with fair precision (typical for Disgust and Fear) means "rarely predicted".
    """
    names = [name for name in EMOTIONS if name in per_class]
    fig = go.Figure()
    for metric in _METRICS:
        fig.add_bar(x=names, y=[per_class[n][metric] for n in names], name=metric)
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1], tickformat=".0%"), margin=dict(t=30, b=10))
    return fig


# ------------------------------------------------------------- one face


def probability_bars(probs: dict[str, np.ndarray]) -> go.Figure:
    """One face's 7 probabilities per model as grouped bars, one colour per model.

    Side by side, models that agree on the top emotion but differ in how sure
    they are (or in the runner-up) are told apart at a glance.
    """
    fig = go.Figure()
    for index, (name, p) in enumerate(probs.items()):
        fig.add_bar(
            x=list(EMOTIONS),
            y=np.asarray(p, dtype=float),
            name=name,
            marker_color=run_colour(index),
            hovertemplate=f"{name}<br>%{{x}}: %{{y:.1%}}<extra></extra>",
        )
    fig.update_layout(
        barmode="group",
        yaxis=dict(title="probability", tickformat=".0%", range=[0, 1]),
        legend=dict(title="model", orientation="h", yanchor="bottom", y=1.02, x=0),
        margin=dict(t=30, b=10),
        height=360,
    )
    return fig


# ---------------------------------------------------------------- trust


def sanity_curves(cascades: dict[str, list[dict]], threshold: float) -> go.Figure:
    """Spearman (solid) and SSIM (dotted) with the original map as more layers are randomised, per method.

    x is the layer randomised last (every layer before it on the axis is
    random too), from the output towards the input. A method that passes
    drops below ``threshold`` (drawn) by the right end: its map depended on
    what the model learnt.
    """
    fig = go.Figure()
    for index, (name, rows) in enumerate(cascades.items()):
        layers = [row["layer"] for row in rows]
        for metric, dash in (("spearman", "solid"), ("ssim", "dot")):
            fig.add_scatter(
                x=layers, y=[row[metric] for row in rows], mode="lines+markers", name=name, legendgroup=name,
                showlegend=metric == "spearman", line=dict(color=run_colour(index), dash=dash),
                hovertemplate=f"{name}<br>up to %{{x}} random<br>{metric} %{{y:.2f}}<extra></extra>",
            )
    fig.add_hline(y=threshold, line=dict(color="grey", dash="dash"), annotation_text=f"pass: Spearman < {threshold}")
    fig.update_layout(
        xaxis=dict(title="randomised down to layer (from the output)", type="category"),
        yaxis=dict(title="similarity to the original map", range=[-1.05, 1.05]),
        legend_title="method (solid: Spearman, dotted: SSIM)", margin=dict(t=30, b=10), height=380,
    )
    return fig


def method_ranking(table: pd.DataFrame, threshold: float) -> go.Figure:
    """``core.explain.compare`` table -> one bar chart per check, methods in the table's order.

    Faithfulness gain (with its standard error; > 0 beats random), the sanity
    check's final Spearman (lower is better; ``threshold``, the pass line, drawn), ground-truth
    mass ratio (> 1 beats chance; only on the demo set) and milliseconds per
    face for the map. The checks have different scales, hence four panels.
    """
    table = table[table["gain"].notna()]
    panels = [("gain", "faithfulness gain", 0.0), ("sanity_spearman", "sanity: final Spearman", threshold),
              ("mass_ratio", "ground truth: mass ratio", 1.0), ("explain_s", "ms per face", None)]
    panels = [p for p in panels if table[p[0]].notna().any()]
    if not panels:  # no method ranked (a DNN with only Grad-CAM): nothing to draw
        return go.Figure()
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for _, title, _ in panels])
    for col, (column, title, level) in enumerate(panels, start=1):
        values = table[column] * (1000 if column == "explain_s" else 1)
        error = dict(type="data", array=table["gain_sem"]) if column == "gain" else None
        fig.add_bar(x=table["title"], y=values, error_y=error, marker_color=[run_colour(i) for i in range(len(table))],
                    showlegend=False, hovertemplate=f"%{{x}}<br>{title} %{{y:.3g}}<extra></extra>", row=1, col=col)
        if level is not None:
            fig.add_hline(y=level, line=dict(color="grey", dash="dash"), row=1, col=col)
        if column == "explain_s":
            fig.update_yaxes(type="log", row=1, col=col)
    fig.update_layout(margin=dict(t=40, b=10), height=380)
    return fig
