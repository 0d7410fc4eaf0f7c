"""core.explain.trust and core.explain.occlusion: trust metrics against hand-computed cases.

The "block model" (as in test_explain.py) sees only one 8x8 block, so the
perfect map is known; a tiny CNN trained for a few seconds on demo faces
serves the sanity check and the region occlusion, and the demo CNN shipped in
models/demo shows that hiding the mouth changes Happy answers.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from block_model import COLS, ROWS, build_block_model

from core.demo import make_demo
from core.evaluation import predict_probs
from core.explain import EXPLAINERS, Occlusion, Saliency
from core.explain.base import scores
from core.explain.compare import compare_methods
from core.explain.occlusion import REGIONS, occlude_regions, patch_starts, region_mask
from core.explain.trust import (
    auc,
    baseline_image,
    deletion_insertion,
    ground_truth_mass,
    passes,
    randomisable_layers,
    ranking,
    sanity_check,
)
from core.faces import FER_TEMPLATE
from core.models import ModelSpec, build_model
from core.runs import Run



@pytest.fixture(scope="module")
def block_model() -> keras.Model:
    return build_block_model()


@pytest.fixture(scope="module")
def sharp_block_model() -> keras.Model:
    """Class 0's logit is 20 x (the block's mean brightness in 0..1 - 0.6), the others 0.

    The block model's own logits barely separate the classes (its probabilities
    move by ~0.001); this one takes class 0 from ~0 (a mid-grey block) to ~1
    (a white block), so deletion curves have something to show.
    """
    mask = np.zeros((48, 48, 1), np.float32)
    mask[ROWS, COLS] = 1
    kernel = np.zeros((1, 7), np.float32)
    kernel[0, 0] = 20.0 * 48 * 48 / 64  # GAP averages over the whole face; the block is 64 px of it
    bias = np.zeros(7, np.float32)
    bias[0] = -15.0
    face = keras.Input((48, 48, 1), name="face")
    x = keras.ops.multiply(keras.layers.Rescaling(1 / 255)(face), mask)
    x = keras.layers.GlobalAveragePooling2D()(x)  # (B, 1)
    logits = keras.layers.Dense(7, kernel_initializer=keras.initializers.Constant(kernel),
                                bias_initializer=keras.initializers.Constant(bias), name="logits")(x)
    return keras.Model(face, keras.layers.Activation("softmax", name="probs")(logits))


@pytest.fixture(scope="module")
def bright_block_face() -> np.ndarray:
    face = make_demo(n_per_class=1, test_per_class=0, seed=0).images[0].copy()
    face[ROWS, COLS] = 250
    return face  # (48, 48)


@pytest.fixture(scope="module")
def demo_model():
    """A tiny CNN trained 12 epochs on 280 demo faces: (model, all 350 faces, their labels).

    Too short a run to generalise well; the tests need a model that has learnt
    something, and pick faces it is sure about among training and held-out ones.

    BatchNorm's momentum is lowered so its moving statistics catch up within so short a run.
    """
    data = make_demo(n_per_class=40, test_per_class=10, seed=3)
    train = data.splits == "Training"
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec("tiny", augment=None), mean=float(data.images[train].mean()),
                        std=float(data.images[train].std()))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(data.images[train][..., None].astype("float32"), data.labels[train], epochs=12, batch_size=16, verbose=0)
    return model, data.images, data.labels


# ------------------------------------------------------------- curves and AUC


def test_auc_of_hand_computed_curves():
    assert auc([0.0, 1.0]) == pytest.approx(0.5)
    assert auc([1.0, 0.6, 0.2, 0.2, 0.0]) == pytest.approx((0.8 + 0.4 + 0.2 + 0.1) * 0.25)  # 0.375
    assert auc([0.3] * 7) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="at least 2 points"):
        auc([1.0])


def test_ranking_puts_the_largest_first_and_breaks_ties_at_random():
    saliency = np.zeros((48, 48))
    saliency[5, 7], saliency[0, 1], saliency[40, 2] = 3.0, 2.0, 1.0
    order = ranking(saliency, np.random.default_rng(0))
    assert list(order[:3]) == [5 * 48 + 7, 1, 40 * 48 + 2]
    assert sorted(order) == list(range(48 * 48))
    assert list(order[3:13]) != sorted(order[3:13])  # the zeros are shuffled, not left in row order


def test_baselines():
    face = np.arange(48 * 48, dtype=np.float32).reshape(48, 48) % 256
    np.testing.assert_allclose(baseline_image(face, "mean"), face.mean())
    np.testing.assert_allclose(baseline_image(face, 7), 7.0)
    np.testing.assert_array_equal(baseline_image(face, "black"), 0.0)
    assert baseline_image(face, "blur").std() < face.std() / 3
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_image(face, "zero")


def test_a_perfect_map_beats_random_orders_on_the_block_model(sharp_block_model, bright_block_face):
    block_model, target = sharp_block_model, 0
    probs = scores(block_model, "softmax", np.stack([bright_block_face, baseline_image(bright_block_face)]))
    assert probs[0, target] > 0.9 and probs[1, target] < 0.05  # white block vs mid-grey block
    perfect = np.zeros((48, 48))
    perfect[ROWS, COLS] = 1.0
    good = deletion_insertion(block_model, bright_block_face, target, perfect, steps=20)
    assert good["fractions"].shape == good["deletion"].shape == good["random_insertion"].shape == (21,)
    np.testing.assert_allclose(good["deletion"][0], probs[0, target], rtol=1e-5)  # x = 0: the face
    np.testing.assert_allclose(good["deletion"][1:], probs[1, target], rtol=1e-5)  # the block (2.8%) is gone by 5%
    np.testing.assert_allclose(good["insertion"][1:], probs[0, target], rtol=1e-5)
    assert good["deletion_auc"] < good["random_deletion_auc"]
    assert good["insertion_auc"] > good["random_insertion_auc"]
    gain = (good["random_deletion_auc"] - good["deletion_auc"]) + (good["insertion_auc"] - good["random_insertion_auc"])
    assert good["gain"] == pytest.approx(gain) and gain > 0
    # The reverse order (block last) must do worse than random.
    bad = deletion_insertion(block_model, bright_block_face, target, 1.0 - perfect, steps=20)
    assert bad["gain"] < 0 < good["gain"]


# ----------------------------------------------------------------- ground truth


def test_ground_truth_mass_of_hand_made_maps():
    mask = np.zeros((48, 48), bool)
    mask[10:12, 10:12] = True  # 4 px
    maps = np.zeros((3, 48, 48))
    maps[0, 10, 10], maps[0, 20, 20] = 1.0, 3.0  # a quarter of its mass in the mask, its peak far away
    maps[1, 12, 12] = 2.0  # all of it diagonally next to the mask
    # maps[2]: no evidence at all
    masks = np.stack([mask] * 3)
    got = ground_truth_mass(maps, masks, tolerance=1)
    np.testing.assert_allclose(got["mass"], [0.25, 0.0, 0.0])
    np.testing.assert_allclose(got["random_mass"], 4 / 2304)
    assert got["hits"].tolist() == [False, True, False]
    assert got["pointing"] == pytest.approx(1 / 3)
    assert got["pointing_random"] == pytest.approx(16 / 2304)  # the 2x2 mask grown by 1 px is 4x4
    assert got["mass_ratio"] == pytest.approx((0.25 / 3) / (4 / 2304))
    assert ground_truth_mass(maps, masks, tolerance=0)["hits"].tolist() == [False, False, False]
    assert ground_truth_mass(maps[0], mask)["mass"].tolist() == [0.25]  # one map
    with pytest.raises(ValueError, match=">= 0"):
        ground_truth_mass(-maps, masks)


# ------------------------------------------------------------------ sanity check


def test_randomising_every_layer_breaks_saliency_and_leaves_the_model_alone(demo_model):
    model, images, labels = demo_model
    face, target = images[0], int(labels[0])
    weights = [w.copy() for w in model.get_weights()]
    probs = scores(model, "softmax", images[:5])
    results = sanity_check(model, Saliency, face, target)
    assert [r["layer"] for r in results] == randomisable_layers(model)
    assert [r["layer"] for r in results][:3] == ["logits", "s2_bn", "s2_conv"]  # output first
    assert "normalize" not in randomisable_layers(model)
    for r in results:
        assert r["map"].shape == (48, 48) and -1 <= r["spearman"] <= 1 and -1 <= r["ssim"] <= 1
    assert results[-1]["spearman"] < 0.5 and passes(results)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    np.testing.assert_array_equal(scores(model, "softmax", images[:5]), probs)


def test_passes_uses_the_fully_randomised_row():
    assert passes([{"spearman": 0.9}, {"spearman": 0.2}])
    assert not passes([{"spearman": 0.1}, {"spearman": 0.7}])
    with pytest.raises(ValueError):
        passes([])


# --------------------------------------------------------------------- occlusion


def test_occlusion_is_in_the_registry_and_sees_only_the_block(block_model, bright_block_face):
    assert EXPLAINERS["occlusion"] is Occlusion
    occlusion_map = Occlusion(block_model, patch=8, stride=4).explain(bright_block_face[None], [0])[0]
    reach = np.zeros((48, 48), bool)
    reach[12:28, 20:36] = True  # pixels that share a patch placement with the block
    assert not occlusion_map[~reach].any()
    np.testing.assert_allclose(occlusion_map[ROWS, COLS], 1.0)  # every block pixel: its covers drop the most
    assert occlusion_map[reach].min() < 1.0


def test_patch_starts_cover_the_face():
    assert patch_starts(8, 4) == list(range(0, 41, 4))
    assert patch_starts(10, 4) == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 38]
    assert patch_starts(48, 5) == [0]
    with pytest.raises(ValueError):
        Occlusion(None, patch=0)  # type: ignore[arg-type]


def test_regions_sit_on_the_fer_template():
    masks = {name: region_mask(name) for name in REGIONS}
    assert set(masks) == {"eyes", "brows", "mouth", "nose"}
    assert sum(m.astype(int) for m in masks.values()).max() == 1  # no pixel in two regions

    def at(name, point):
        return masks[name][round(point[1]), round(point[0])]

    assert at("eyes", FER_TEMPLATE["left_eye"]) and at("eyes", FER_TEMPLATE["right_eye"])
    assert at("mouth", FER_TEMPLATE["mouth_left"]) and at("mouth", FER_TEMPLATE["mouth_right"])
    assert at("nose", FER_TEMPLATE["nose"])
    brow_rows = np.flatnonzero(masks["brows"].any(axis=1))
    assert brow_rows.max() < FER_TEMPLATE["left_eye"][1] - 3  # above the eyes
    with pytest.raises(ValueError, match="unknown region"):
        region_mask("chin")


def test_hiding_the_mouth_lowers_happy_on_faces_the_model_calls_happy(demo_model):
    """On every Happy face the model calls Happy, hiding the mouth (the smile) lowers p(Happy).

    That it *changes the prediction* needs a better-trained model: the
    shipped demo CNN, in the test below.
    """
    model, images, labels = demo_model
    probs = scores(model, "softmax", images)
    happy = np.flatnonzero((labels == 3) & (probs.argmax(axis=1) == 3))
    assert len(happy) >= 5, "the demo model classifies too few Happy faces as Happy"
    covered = [occlude_regions(model, images[i]) for i in happy]
    for p in covered[0].values():
        assert p.shape == (7,) and p.sum() == pytest.approx(1.0, abs=1e-5)
    assert set(covered[0]) == {"eyes", "brows", "mouth"}
    mouth = np.array([c["mouth"][3] for c in covered])
    assert (mouth < probs[happy, 3]).mean() >= 0.8
    assert np.mean(probs[happy, 3] - mouth) > 0.05


def test_hiding_the_mouth_flips_happy_predictions_of_the_shipped_demo_model():
    """The demo CNN shipped in models/demo (trained 10 epochs, 0.74 on demo test faces) reads Happy off the mouth.

    Happy and Neutral demo faces differ mainly by the mouth (``core.demo``), so
    hiding it must change many of the model's Happy answers, far more than
    hiding the eyes, the brows or a box of the mouth's size on the forehead does.
    """
    model = Run(Path(__file__).parents[1] / "models" / "demo" / "tiny-a4e6614394").model()
    data = make_demo(n_per_class=40, test_per_class=10, seed=3)
    happy = data.images[(data.labels == 3) & (scores(model, "softmax", data.images).argmax(axis=1) == 3)]
    assert len(happy) >= 20

    def flip_rate(mask: np.ndarray) -> float:
        covered = happy.astype(np.float32)
        for face in covered:
            face[mask] = face.mean()
        return float(np.mean(scores(model, "softmax", covered).argmax(axis=1) != 3))

    mouth = flip_rate(region_mask("mouth"))
    others = [flip_rate(region_mask("eyes")), flip_rate(region_mask("brows")), flip_rate(np.roll(region_mask("mouth"), -30, axis=0))]
    assert mouth >= 0.3 and mouth > 2 * max(others)
    # and occlude_regions, what Home's "cover the mouth" calls, agrees face by face
    first = occlude_regions(model, happy[0], ["mouth"])["mouth"]
    manual = happy[0].astype(np.float32)
    manual[region_mask("mouth")] = manual.mean()
    np.testing.assert_allclose(first, scores(model, "softmax", manual[None])[0], rtol=1e-5)


# ------------------------------------------------------- which method to trust


def test_compare_methods_tabulates_each_check_per_method(sharp_block_model, bright_block_face):
    """Every figure in the table is the mean of the per-face checks, rows best first, a DNN-only refusal noted."""
    faces = np.stack([bright_block_face, np.clip(bright_block_face.astype(int) - 20, 0, 255), bright_block_face[:, ::-1]])
    targets = np.zeros(3, int)
    masks = np.zeros((3, 48, 48), bool)
    masks[:, ROWS, COLS] = True
    seen: list[tuple[int, int]] = []
    table = compare_methods(sharp_block_model, faces, targets, {"saliency": {}, "gradcam": {}, "occlusion": {}},
                            masks=masks, sanity_faces=1, steps=10, progress=lambda what, done, total: seen.append((done, total)))
    assert list(table["method"][:2]) == sorted(["saliency", "occlusion"], key=lambda m: -table.set_index("method")["gain"][m])
    assert table["method"].iloc[-1] == "gradcam" and "convolutional" in table["note"].iloc[-1]
    assert np.isnan(table["gain"].iloc[-1])
    assert seen[-1][0] == seen[-1][1] and all(b >= a for (a, _), (b, _) in zip(seen, seen[1:]))

    row = table.set_index("method").loc["saliency"]
    maps = Saliency(sharp_block_model).explain(faces, targets)
    gains = [deletion_insertion(sharp_block_model, f, 0, m, steps=10)["gain"] for f, m in zip(faces, maps)]
    assert row["gain"] == pytest.approx(np.mean(gains)) and row["gain"] > 0
    assert row["gain_sem"] == pytest.approx(np.std(gains, ddof=1) / np.sqrt(3))
    assert row["mass_ratio"] == pytest.approx(ground_truth_mass(maps, masks)["mass_ratio"]) and row["mass_ratio"] > 1
    assert row["pointing"] == 1.0
    cascade = sanity_check(sharp_block_model, Saliency, faces[0], 0)
    assert row["sanity_spearman"] == pytest.approx(cascade[-1]["spearman"])
    assert row["sanity_pass"] == float(passes(cascade))
    assert row["explain_s"] > 0 and row["faithfulness_s"] > 0 and row["sanity_s"] > 0

    without = compare_methods(sharp_block_model, faces[:1], targets[:1], {"saliency": {}}, sanity_faces=0, steps=10)
    assert np.isnan(without["mass_ratio"][0]) and np.isnan(without["sanity_pass"][0])
    with pytest.raises(ValueError, match="one target per face"):
        compare_methods(sharp_block_model, faces, targets[:2])

    # No targets: each face's own prediction is explained.
    own = int(predict_probs(sharp_block_model, faces[1:2]).argmax())
    gain = {t: compare_methods(sharp_block_model, faces[1:2], None if t is None else [t], {"saliency": {}},
                               sanity_faces=0, steps=10)["gain"][0] for t in (None, own, (own + 1) % 7)}
    assert gain[None] == gain[own] != gain[(own + 1) % 7]
