"""core.explain: the explainer contract, each method's behaviour, and the filter pictures.

Models are tiny and untrained (``tiny`` preset, a DNN matched to it, a
two-member ensemble) or built by hand so the right answer is known: the
"block model" sees only one 8x8 pixel block. ``FERLAB_VIS_STEPS`` (8, set in
conftest) keeps gradient ascents short.
"""

from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import pytest
from block_model import COLS, ROWS, build_block_model

from core.demo import make_demo
from core.explain import EXPLAINERS, Lime, Saliency, SmoothGrad, segment_face
from core.explain.filters import ENV_STEPS, capped_steps, class_images, feature_maps, filter_images
from core.explain.base import scores
from core.explain.gradcam import GradCAM, GradCAMPlusPlus, cell_centres, placement
from core.explain.integrated import integrated_gradients
from core.explain.lime import _VectorisedLime
from core.models import ModelSpec, build_model, last_conv_layer, logits_model

FAST = {"lime": {"n_samples": 200}, "smoothgrad": {"n_samples": 8}}  # knobs that keep each call well under a second


def knobs(key: str) -> dict:
    return FAST.get(key, {})


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return make_demo(n_per_class=1, test_per_class=0, seed=0).images[:3]  # (3, 48, 48) uint8


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(0)  # the same untrained weights every run
    return build_model(ModelSpec("tiny"))


@pytest.fixture(scope="module")
def ensemble() -> keras.Model:
    """Like ``core.runs.Run.model``: members' probabilities averaged, no logits layer."""
    keras.utils.set_random_seed(1)
    members = [build_model(ModelSpec("tiny")) for _ in range(2)]
    for i, member in enumerate(members):
        member.name = f"member{i}"  # a functional model needs unique layer names
    face = keras.Input((48, 48, 1), name="face")
    return keras.Model(face, keras.layers.Average(name="probs")([m(face) for m in members]))


@pytest.fixture(scope="module")
def block_model() -> keras.Model:
    return build_block_model()


@pytest.fixture(scope="module")
def bright_block_face(faces) -> np.ndarray:
    """A demo face with the block painted near-white (brighter than the face's mean)."""
    face = faces[0].copy()
    face[ROWS, COLS] = 250
    return face[None]  # (1, 48, 48)


def assert_maps(maps: np.ndarray, n: int, may_be_empty: bool = False) -> None:
    """The contract; ``may_be_empty``: a map may be all zero (no positive evidence), but not every map."""
    assert maps.shape == (n, 48, 48) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0
    peaks = maps.max(axis=(1, 2))
    if may_be_empty:
        assert peaks.any()
        peaks = peaks[peaks > 0]
    np.testing.assert_allclose(peaks, 1.0, rtol=1e-6)


# ------------------------------------------------------------------ contract


@pytest.mark.parametrize("kind", ["cnn", "ensemble"])
@pytest.mark.parametrize("key", sorted(EXPLAINERS))
def test_every_explainer_keeps_the_contract(key, kind, faces, request):
    model = request.getfixturevalue(kind)
    assert EXPLAINERS[key].description.strip() and "\n" not in EXPLAINERS[key].description
    assert EXPLAINERS[key].title.strip()
    targets = np.array([0, 3, 6])
    maps = EXPLAINERS[key](model, **knobs(key)).explain(faces, targets)
    assert_maps(maps, 3, may_be_empty=key == "gradcam")  # ReLU'd: an untrained CNN can have no positive evidence
    # A fresh explainer with the same seeds, on (N, 48, 48, 1) input, gives the same maps.
    np.testing.assert_array_equal(EXPLAINERS[key](model, **knobs(key)).explain(faces[..., None], targets), maps)
    # Each face is explained for its own target: alone, it gets the map it got in the batch
    # (up to float rounding, which a batch of one changes and which can flip a max-pool tie
    # on the demo faces' flat patches: a few pixels by ~0.03; a mix-up moves every pixel).
    for face, target, expected in zip(faces, targets, maps):
        alone = EXPLAINERS[key](model, **knobs(key)).explain(face[None], [target])[0]
        np.testing.assert_allclose(alone, expected, atol=0.05)


@pytest.mark.parametrize("key", sorted(EXPLAINERS))
def test_on_a_dnn_the_cam_methods_refuse_clearly_and_the_rest_work(key, faces):
    dnn = build_model(ModelSpec("dnn", dnn_match="tiny"))
    if EXPLAINERS[key].needs_conv:
        with pytest.raises(ValueError, match="Grad-CAM needs a convolutional layer"):
            EXPLAINERS[key](dnn)
    else:
        assert_maps(EXPLAINERS[key](dnn, **knobs(key)).explain(faces[:1], [2]), 1)


def test_an_ensemble_with_a_dnn_member_is_refused_for_its_member(cnn):
    face = keras.Input((48, 48, 1), name="face")
    dnn = build_model(ModelSpec("dnn", dnn_match="tiny"))
    mixed = keras.Model(face, keras.layers.Average(name="probs")([cnn(face), dnn(face)]))
    with pytest.raises(ValueError, match="has a member without one"):
        GradCAM(mixed)


def test_bad_arguments_are_refused(cnn, faces):
    with pytest.raises(ValueError, match="unknown score"):
        Saliency(cnn, score="probability")
    with pytest.raises(ValueError, match="3 images but 2 targets"):
        Saliency(cnn).explain(faces, [0, 1])
    with pytest.raises(ValueError, match="class indices"):
        Saliency(cnn).explain(faces[:1], [7])
    with pytest.raises(ValueError, match=r"\(N, 48, 48\)"):
        Saliency(cnn).explain(faces[:, :32], [0, 1, 2])
    assert Saliency(cnn).explain(faces[:0], []).shape == (0, 48, 48)


# ----------------------------------------------------------------- behaviour


def test_smoothgrad_with_one_noiseless_sample_is_saliency(cnn, faces):
    targets = np.array([1, 4, 5])
    np.testing.assert_array_equal(
        SmoothGrad(cnn, n_samples=1, noise=0.0).explain(faces, targets), Saliency(cnn).explain(faces, targets)
    )


@pytest.mark.parametrize("key", sorted(EXPLAINERS))
def test_logit_and_softmax_maps_differ(key, cnn, faces):
    logit = EXPLAINERS[key](cnn, score="logit", **knobs(key)).explain(faces[:1], [3])
    softmax = EXPLAINERS[key](cnn, score="softmax", **knobs(key)).explain(faces[:1], [3])
    assert np.abs(logit - softmax).mean() > 1e-3


def test_saliency_is_zero_outside_the_pixels_the_model_sees(block_model, bright_block_face):
    for explainer in (Saliency(block_model), SmoothGrad(block_model, n_samples=4)):
        saliency = explainer.explain(bright_block_face, [0])[0]
        outside = np.ones((48, 48), bool)
        outside[ROWS, COLS] = False
        assert saliency[~outside].max() == 1.0
        assert not saliency[outside].any()


def test_gradcam_puts_its_mass_on_the_block(block_model, bright_block_face):
    cam = GradCAM(block_model).explain(bright_block_face, [0])[0]
    assert np.unravel_index(cam.argmax(), cam.shape) in {(r, c) for r in range(16, 24) for c in range(24, 32)}
    assert cam[ROWS, COLS].sum() / cam.sum() > 0.5  # the block is 2.8% of the face
    assert cam[12:28, 20:36].sum() / cam.sum() > 0.999  # nothing beyond the neighbouring half-cells


@pytest.mark.parametrize("ours, theirs", [(GradCAM, "gradcam.Gradcam"), (GradCAMPlusPlus, "gradcam_plus_plus.GradcamPlusPlus")])
def test_cams_agree_with_tf_keras_vis(ours, theirs, cnn, faces):
    """Same maps at the conv layer's resolution (tf-keras-vis upsamples corner-aligned, we centre-aligned)."""
    import importlib

    import tensorflow as tf
    from tf_keras_vis.utils.scores import CategoricalScore

    module, name = theirs.split(".")
    reference = getattr(importlib.import_module(f"tf_keras_vis.{module}"), name)
    maps = ours(cnn).explain(faces, [0, 3, 6])
    expected = reference(logits_model(cnn), clone=False)(
        CategoricalScore([0, 3, 6]), faces[..., None].astype(np.float32),
        penultimate_layer=last_conv_layer(cnn), expand_cam=False, normalize_cam=False,
    )  # (3, 6, 6)
    expected = tf.image.resize(np.asarray(expected)[..., None], (48, 48)).numpy()[..., 0]
    peaks = expected.max(axis=(1, 2), keepdims=True)
    assert (peaks > 0).any()
    np.testing.assert_allclose(maps, expected / np.where(peaks > 0, peaks, 1), atol=1e-4)


def test_gradcam_plus_plus_is_not_gradcam(cnn, faces):
    """The two differ on a CNN, or the agreement test above would not tell them apart."""
    assert np.abs(GradCAMPlusPlus(cnn).explain(faces, [0, 3, 6]) - GradCAM(cnn).explain(faces, [0, 3, 6])).max() > 0.05


@pytest.fixture(scope="module")
def valid_padded() -> keras.Model:
    """The ``vgg6avg`` preset: 'valid' convolutions after its first block, so its last conv's 6x6 cells sit mid-face."""
    keras.utils.set_random_seed(2)
    return build_model(ModelSpec("vgg6avg", augment=None))


def test_cell_centres_are_the_centres_of_the_receptive_fields(cnn, valid_padded):
    """Checked against the gradients: LeakyReLU and average pooling pass gradient to every pixel a cell sees."""
    import tensorflow as tf

    assert cell_centres(cnn, last_conv_layer(cnn))[0] == (1.5, 4.0, 12)  # 'same' padding: 12 cells tile the face
    layer = last_conv_layer(valid_padded)
    (start, step, cells), columns = cell_centres(valid_padded, layer)
    assert (start, step, cells) == (13.5, 4.0, 6) and columns == (start, step, cells)
    features = keras.Model(valid_padded.inputs, valid_padded.get_layer(layer).output)
    face = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 48, 48, 1)), tf.float32)
    for j in (1, 2, 3, 4):  # cells whose receptive field the face's border does not cut
        with tf.GradientTape() as tape:
            tape.watch(face)
            cell = tf.reduce_sum(features(face)[0, j, j])
        seen = np.abs(tape.gradient(cell, face).numpy()[0, ..., 0]) > 0
        rows = np.flatnonzero(seen.any(axis=1))
        assert 0 < rows[0] and rows[-1] < 47 and (rows[0] + rows[-1]) / 2 == start + step * j


def test_placement_is_pixel_centre_resizing_when_cells_tile_the_face():
    import tensorflow as tf

    cells = np.random.default_rng(0).random((1, 6, 6, 1)).astype(np.float32)
    expected = tf.image.resize(cells, (48, 48), method="bilinear").numpy()[0, ..., 0]
    drawn = placement(3.5, 8.0, 6) @ cells[0, ..., 0] @ placement(3.5, 8.0, 6).T
    np.testing.assert_allclose(drawn, expected, atol=1e-6)


def test_gradcam_draws_a_valid_padded_net_only_where_its_cells_see(valid_padded, faces):
    """Cells centred on pixels 13.5..33.5, 4 apart: nothing beyond half a cell from the outer ones."""
    maps = GradCAM(valid_padded).explain(faces, [0, 3, 6])
    assert maps.max() == 1.0
    inside = np.zeros(48, bool)
    inside[12:36] = True  # pixels 11.5 < p < 35.5
    assert not maps[:, ~inside, :].any() and not maps[:, :, ~inside].any()


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus])
def test_cams_work_on_a_mixed_precision_model(method, cnn, faces):
    """A bfloat16 model (training's ``--bf16``) gives about the float32 map of the same weights."""
    bf16 = build_model(ModelSpec("tiny"), policy="mixed_bfloat16")
    bf16.set_weights(cnn.get_weights())
    maps, expected = method(bf16).explain(faces, [0, 3, 6]), method(cnn).explain(faces, [0, 3, 6])
    assert np.isfinite(maps).all() and expected.any()
    assert np.abs(maps - expected).mean() < 0.05


def test_integrated_gradients_of_a_linear_score_is_weight_times_change():
    """Exact for a linear score with any number of steps, and complete: the sum is score(face) - score(baseline)."""
    keras.utils.set_random_seed(3)
    face_in = keras.Input((48, 48, 1))
    logits = keras.layers.Dense(7, name="logits")(keras.layers.Flatten()(face_in))
    linear = keras.Model(face_in, keras.layers.Activation("softmax", name="probs")(logits))
    face = np.random.default_rng(0).uniform(0, 255, (1, 48, 48)).astype(np.float32)
    weights = linear.get_layer("logits").kernel.numpy()[:, 4].reshape(48, 48)
    for steps in (1, 5):
        attributions = integrated_gradients(linear, "logit", face, np.array([4]), np.full_like(face, 10.0), steps=steps)[0]
        np.testing.assert_allclose(attributions, weights * (face[0] - 10.0), rtol=1e-4, atol=1e-4)
    change = scores(linear, "logit", face)[0, 4] - scores(linear, "logit", np.full_like(face, 10.0))[0, 4]
    np.testing.assert_allclose(attributions.sum(), change, rtol=1e-3)


def test_integrated_gradients_is_complete_on_a_cnn(cnn, faces):
    """On a ReLU network the midpoint sum converges to score(face) - score(black face)."""
    attributions = integrated_gradients(cnn, "logit", faces, np.array([0, 3, 6]), np.zeros_like(faces), steps=256)
    change = scores(cnn, "logit", faces)[[0, 1, 2], [0, 3, 6]] - scores(cnn, "logit", np.zeros_like(faces))[:, [0, 3, 6]][[0, 1, 2], [0, 1, 2]]
    np.testing.assert_allclose(attributions.sum(axis=(1, 2)), change, rtol=0.02, atol=0.02)


def test_integrated_gradients_explainer_keeps_the_evidence_from_its_baseline(cnn, faces):
    """The map is the positive part of the attributions from the named baseline image; a bad name is refused."""
    from core.explain import IntegratedGradients

    for name, base in (("black", np.zeros_like(faces[:2], np.float32)), ("mean", faces[:2].mean(axis=(1, 2), keepdims=True) + np.zeros((2, 48, 48)))):
        expected = np.maximum(integrated_gradients(cnn, "logit", faces[:2], np.array([1, 2]), base, 32), 0)
        expected /= expected.max(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(IntegratedGradients(cnn, baseline=name).explain(faces[:2], [1, 2]), expected, atol=1e-5)
    with pytest.raises(ValueError, match="unknown baseline 'white'"):
        IntegratedGradients(cnn, baseline="white")


def test_ensemble_gradcam_averages_its_members(ensemble, faces):
    members = [layer for layer in ensemble.layers if isinstance(layer, keras.Model)]
    expected = np.mean([GradCAM(m).explain(faces, [1, 2, 3]) for m in members], axis=0)
    expected /= expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(GradCAM(ensemble).explain(faces, [1, 2, 3]), expected, rtol=1e-5, atol=1e-6)


def test_lime_top_superpixels_overlap_the_block(block_model, bright_block_face):
    lime_map = Lime(block_model, n_samples=300).explain(bright_block_face, [0])[0]
    segments = segment_face(bright_block_face[0])
    weights = np.array([lime_map[segments == s].max() for s in range(segments.max() + 1)])  # one per superpixel
    on_block = np.unique(segments[ROWS, COLS])
    assert set(np.argsort(-weights)[: len(on_block)]) == set(on_block)  # they outrank every other superpixel


def test_lime_draws_only_evidence_for_the_class(block_model, bright_block_face):
    """A dark block: hiding it (painting it mean grey) raises every score, so its weights are < 0 and not drawn."""
    dark = bright_block_face.copy()
    dark[0, ROWS, COLS] = 5
    lime_map = Lime(block_model, n_samples=300).explain(dark, [0])[0]
    on_block = np.isin(segment_face(dark[0]), np.unique(segment_face(dark[0])[ROWS, COLS]))
    assert not lime_map[on_block].any()


def test_segmentation_gives_many_superpixels_on_faces():
    for face in make_demo(n_per_class=1, test_per_class=0, seed=5).images:
        segments = segment_face(face)
        assert segments.shape == (48, 48)
        n = len(np.unique(segments))
        assert 20 <= n <= 80
        np.testing.assert_array_equal(np.unique(segments), np.arange(n))  # lime indexes columns by label


def test_vectorised_lime_matches_lime_itself(faces):
    from lime import lime_image

    weights = np.random.default_rng(0).standard_normal((48 * 48, 7))

    def classifier(rgb):  # (B, 48, 48, 3) -> (B, 7): a fixed linear "model"
        return rgb[..., 0].reshape(len(rgb), -1) @ weights

    face = faces[1].astype(np.float64)
    segments = segment_face(faces[1])
    args = dict(labels=(4,), top_labels=None, hide_color=face.mean(), num_samples=120, batch_size=50,
                segmentation_fn=lambda _: segments)
    ours = _VectorisedLime(random_state=3).explain_instance(face, classifier, **args).local_exp[4]
    theirs = lime_image.LimeImageExplainer(random_state=3).explain_instance(face, classifier, **args).local_exp[4]
    np.testing.assert_allclose(sorted(ours), sorted(theirs))


@pytest.mark.parametrize("kind", ["cnn", "ensemble"])
def test_explaining_never_changes_the_model(kind, faces, request):
    """The dashboard's models are shared by every session (``st.cache_resource``)."""
    from core.explain.trust import sanity_check

    model = request.getfixturevalue(kind)

    def snapshot():
        layers = [(layer.name, type(layer).__name__, layer.trainable, getattr(layer, "activation", None))
                  for layer in model.layers]
        probs = np.asarray(model(faces[..., None].astype("float32"), training=False))
        return layers, [w.copy() for w in model.get_weights()], probs

    layers, weights, probs = snapshot()
    for key, cls in EXPLAINERS.items():
        for score in ("logit", "softmax"):
            cls(model, score=score, **knobs(key)).explain(faces, [0, 1, 2])
    sanity_check(model, Saliency, faces[0], 3)
    if kind == "cnn":
        filter_images(model, "s1_conv", [0, 1])
        class_images(model)
        feature_maps(model, "s0_conv", faces[0])
    layers_after, weights_after, probs_after = snapshot()
    assert layers_after == layers
    assert all(np.array_equal(a, b) for a, b in zip(weights, weights_after, strict=True))
    np.testing.assert_array_equal(probs_after, probs)


def test_cached_functions_do_not_keep_a_model_alive(faces):
    model = build_model(ModelSpec("tiny", augment=None))
    GradCAM(model).explain(faces[:1], [0])
    Saliency(model, score="softmax").explain(faces[:1], [0])
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


# ------------------------------------------------------------------- filters


def mean_activation(model, layer, images, channels) -> np.ndarray:
    return np.array([feature_maps(model, layer, im)[c].mean() for im, c in zip(images, channels)])


def test_filter_images_differ_per_filter_and_raise_its_activation(cnn):
    channels = [0, 5, 0]
    start = filter_images(cnn, "s1_conv", channels, steps=0)
    images = filter_images(cnn, "s1_conv", channels)
    assert images.shape == (3, 48, 48) and images.dtype == np.uint8
    assert np.array_equal(start[0], start[1])  # one starting noise for all
    assert np.abs(images[0].astype(int) - images[1]).mean() > 2  # different filters, different pictures
    assert np.abs(images[0].astype(int) - images[2]).max() <= 1  # the same filter, the same picture
    assert (mean_activation(cnn, "s1_conv", images, channels) > mean_activation(cnn, "s1_conv", start, channels)).all()


def test_class_images_raise_each_class_logit(cnn):
    def own_logits(images):  # (7, 48, 48) -> (7,): image k's logit of class k
        return np.diag(np.asarray(logits_model(cnn)(images[..., None].astype("float32"), training=False)))

    assert (own_logits(class_images(cnn)) > own_logits(class_images(cnn, steps=0))).all()


def test_feature_maps_are_the_layers_output(cnn, faces):
    maps = feature_maps(cnn, "s0_conv", faces[0])
    assert maps.shape == (32, 48, 48) and maps.dtype == np.float32
    layer = keras.Model(cnn.input, cnn.get_layer("s0_conv").output)
    direct = layer(faces[:1, ..., None].astype("float32"), training=False)
    np.testing.assert_allclose(maps, np.moveaxis(np.asarray(direct)[0], -1, 0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no spatial maps"):
        feature_maps(cnn, "logits", faces[0])


def test_ascent_steps_are_capped_by_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_STEPS, "3")
    assert capped_steps(100) == 3 and capped_steps(2) == 2
    monkeypatch.delenv(ENV_STEPS)
    assert capped_steps(100) == 100
