"""The demo set must behave like FER2013 and carry its emotion only where its masks say."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from skimage.feature import hog
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from core.data import EMOTIONS, FaceDataset, load_dataset
from core.demo import make_demo


@pytest.fixture(scope="module")
def faces() -> FaceDataset:
    """Big enough for statistics, small enough to build in well under a second."""
    return make_demo(n_per_class=100, test_per_class=30, seed=7)


def test_layout_matches_fer2013() -> None:
    d = make_demo(n_per_class=5, test_per_class=2, seed=3)
    n = 7 * (5 + 2)
    assert d.images.shape == (n, 48, 48) and d.images.dtype == np.uint8
    assert d.masks is not None and d.masks.shape == (n, 48, 48) and d.masks.dtype == bool
    assert d.labels.dtype == np.int64
    assert d.splits.tolist() == ["Training"] * 35 + ["PublicTest"] * 14
    assert d.split("Training").class_counts().tolist() == [5] * 7
    assert d.split("PublicTest").class_counts().tolist() == [2] * 7
    assert d.ids.tolist() == [f"demo:{i}" for i in range(n)]
    assert d.source == "demo"
    # Interleaved, not one block per class: a prefix of the CSV holds several emotions.
    assert len(set(d.labels[:7].tolist())) >= 3


def test_load_dataset_demo_gives_the_default_sizes() -> None:
    d = load_dataset("demo")
    assert d.split("Training").class_counts().tolist() == [300] * len(EMOTIONS)
    assert d.split("PublicTest").class_counts().tolist() == [60] * len(EMOTIONS)


def test_same_seed_is_byte_identical_and_another_seed_is_not() -> None:
    a, b, c = (make_demo(n_per_class=4, test_per_class=1, seed=s) for s in (11, 11, 12))
    assert a.images.tobytes() == b.images.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    assert a.labels.tolist() == b.labels.tolist()
    assert a.fingerprint() == b.fingerprint()
    assert np.mean(a.images != c.images) > 0.5
    assert a.masks.tobytes() != c.masks.tobytes()


def test_masks_cover_a_plausible_share_of_the_face(faces: FaceDataset) -> None:
    share = faces.masks.mean(axis=(1, 2))
    assert 0.10 < share.mean() < 0.40
    assert share.min() > 0.03, "every face has brows, eyes and a mouth"


def test_emotions_differ_inside_the_masks(faces: FaceDataset) -> None:
    """Class means of two emotions differ more inside the usual mask region than outside.

    Images are high-passed first (minus a blur) because raw class means are
    dominated by the label-free background and lighting jitter at this sample
    size; what is left are strokes, which is where emotions can differ.
    """
    images = faces.images.astype(np.float32)
    strokes = np.stack([i - cv2.GaussianBlur(i, (0, 0), 3) for i in images])
    means = np.stack([strokes[faces.labels == k].mean(axis=0) for k in range(len(EMOTIONS))])
    region = faces.masks.mean(axis=0) > 0.2
    ratios = []
    for a, b in itertools.combinations(range(len(EMOTIONS)), 2):
        difference = np.abs(means[a] - means[b])
        ratios.append(difference[region].mean() / difference[~region].mean())
    assert min(ratios) > 1.1, ratios
    assert np.mean(ratios) > 1.4, ratios


def test_masks_follow_each_faces_pose(faces: FaceDataset) -> None:
    """Each mask sits on its own face's edges better than the same mask moved 3 px.

    This fails if masks are drawn without the shift/scale/rotation of their face.
    """

    def edge_strength(image: np.ndarray) -> np.ndarray:
        smooth = cv2.GaussianBlur(image.astype(np.float32), (3, 3), 0)
        return np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))

    edges = np.stack([edge_strength(i) for i in faces.images])

    def mean_edge(masks: np.ndarray) -> np.ndarray:
        return (edges * masks).sum(axis=(1, 2)) / masks.sum(axis=(1, 2))

    own = mean_edge(faces.masks)
    for shift in ((3, 0), (-3, 0), (0, 3), (0, -3)):
        moved = mean_edge(np.roll(faces.masks, shift, axis=(1, 2)))
        assert np.mean(own > moved) > 0.85, shift


def test_a_simple_model_separates_the_emotions(faces: FaceDataset) -> None:
    """Logistic regression on HOG features: far above the 1/7 chance level."""
    features = np.stack([hog(i, orientations=8, pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for i in faces.images])
    train, test = faces.splits == "Training", faces.splits == "PublicTest"
    scaler = StandardScaler().fit(features[train])
    model = LogisticRegression(max_iter=300).fit(scaler.transform(features[train]), faces.labels[train])
    assert model.score(scaler.transform(features[test]), faces.labels[test]) > 0.60


def test_background_and_lighting_do_not_give_the_emotion_away(faces: FaceDataset) -> None:
    """Brightness and contrast of the border and of the whole image predict nothing."""
    border = np.ones((48, 48), dtype=bool)
    border[4:-4, 4:-4] = False
    images = faces.images.astype(np.float32)
    summary = np.stack(
        [images[:, border].mean(1), images[:, border].std(1), images.mean((1, 2)), images.std((1, 2))], axis=1
    )
    train, test = faces.splits == "Training", faces.splits == "PublicTest"
    scaler = StandardScaler().fit(summary[train])
    model = LogisticRegression(max_iter=300).fit(scaler.transform(summary[train]), faces.labels[train])
    assert model.score(scaler.transform(summary[test]), faces.labels[test]) < 0.30
