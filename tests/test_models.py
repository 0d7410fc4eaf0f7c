"""Presets near the reports' sizes, a fair DNN, and self-contained saved models."""

import keras
import numpy as np
import pytest

from core.models import PRESETS, Augment, ModelSpec, _dnn_trainable, build_model, count_params, dnn_widths, input_stats, logits_model

# The reports' trainable-parameter counts for their networks.
REPORTED = {"alexnet4": 5.66e6, "vgg9": 1.70e6, "vgg6avg": 4.88e6, "conv5": 5.76e6}


@pytest.mark.parametrize("arch", sorted(REPORTED))
def test_reference_presets_land_near_the_reports(arch):
    trainable = count_params(build_model(ModelSpec(arch)))["trainable"]
    assert abs(trainable - REPORTED[arch]) / REPORTED[arch] < 0.03, trainable


@pytest.mark.parametrize("arch", ["ferlab", "vgg9", "conv5", "tiny"])
def test_dnn_matches_the_cnn_within_2_percent(arch):
    cnn = count_params(build_model(ModelSpec(arch)))["trainable"]
    dnn_model = build_model(ModelSpec("dnn", dnn_match=arch))
    dnn = count_params(dnn_model)["trainable"]
    assert abs(dnn - cnn) / cnn <= 0.02, (cnn, dnn)
    assert not any(isinstance(layer, keras.layers.Conv2D) for layer in dnn_model.layers)


def test_ferlab_wide_is_ferlab_at_twice_every_width():
    """Same layers in the same order, each conv twice as wide (so ~4x the parameters)."""

    def convs(arch: str) -> list[tuple[str, int]]:
        model = build_model(ModelSpec(arch))
        return [(layer.name, layer.filters) for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    narrow, wide = convs("ferlab"), convs("ferlab-wide")
    assert [name for name, _ in wide] == [name for name, _ in narrow]
    assert [filters for _, filters in wide] == [2 * filters for _, filters in narrow]
    ratio = count_params(build_model(ModelSpec("ferlab-wide")))["trainable"] / count_params(build_model(ModelSpec()))["trainable"]
    assert 3.9 < ratio < 4.1, ratio


def test_dnn_widths_hit_small_and_large_targets():
    for target in (20_000, 1_000_000, 5_000_000):
        widths = dnn_widths(target)
        assert len(widths) == 3
        assert abs(_dnn_trainable(widths) - target) / target < 0.002, (target, widths)


def test_every_model_takes_raw_faces_and_gives_probabilities():
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype("float32")
    for arch in list(PRESETS) + ["dnn"]:
        probs = np.asarray(build_model(ModelSpec(arch, dnn_match="tiny")).predict(faces, verbose=0))
        assert probs.shape == (3, 7)
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_saved_model_is_self_contained(tmp_path):
    """Normalisation lives in the file: load (safe_mode) -> same predictions on raw pixels."""
    model = build_model(ModelSpec("tiny", Augment(erasing=0.5)), mean=101.0, std=37.0)
    faces = np.random.default_rng(1).integers(0, 256, (4, 48, 48, 1)).astype("float32")
    before = model.predict(faces, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(faces, verbose=0), before, rtol=1e-5, atol=1e-6)
    assert input_stats(loaded) == pytest.approx((101.0, 37.0))


def test_augmentation_is_off_at_inference_and_on_in_training():
    model = build_model(ModelSpec("tiny", Augment(rotation_deg=30, zoom=0.3, shift=0.3, shear=0.3, erasing=1.0)))
    faces = np.random.default_rng(2).integers(0, 256, (2, 48, 48, 1)).astype("float32")
    a, b = model(faces, training=False), model(faces, training=False)
    np.testing.assert_allclose(a, b)
    augment = keras.Model(model.inputs, model.get_layer("normalize").input)
    assert not np.allclose(augment(faces, training=True), faces)


def test_nearest_interpolation_moves_pixels_without_blending_them():
    """``interpolation="nearest"`` (cheap under JAX) reaches every affine layer: a
    transformed face holds only grey levels of the original, while bilinear blends new ones."""
    faces = np.random.default_rng(4).integers(0, 256, (2, 48, 48, 1)).astype("float32")

    def augmented(interpolation: str) -> np.ndarray:
        spec = ModelSpec("tiny", Augment(flip=False, interpolation=interpolation))
        model = build_model(spec)
        return np.asarray(keras.Model(model.inputs, model.get_layer("normalize").input)(faces, training=True))

    nearest, bilinear = augmented("nearest"), augmented("bilinear")
    assert not np.allclose(nearest, faces)
    assert np.isin(nearest, faces).all()
    assert not np.isin(bilinear, faces).all()


def test_interpolation_enters_the_config_only_when_not_bilinear():
    """Runs shipped before the field existed keep their ids (``test_shipped_runs_keep_their_ids``)."""
    assert "interpolation" not in ModelSpec().to_dict()["augment"]
    nearest = ModelSpec(augment=Augment(interpolation="nearest"))
    assert nearest.to_dict()["augment"]["interpolation"] == "nearest"
    assert ModelSpec.from_dict(nearest.to_dict()) == nearest
    assert ModelSpec.from_dict(ModelSpec().to_dict()) == ModelSpec()


def test_logits_model_shares_weights_and_ends_before_softmax():
    model = build_model(ModelSpec("tiny"))
    faces = np.random.default_rng(3).integers(0, 256, (2, 48, 48, 1)).astype("float32")
    logits = logits_model(model)(faces, training=False)
    np.testing.assert_allclose(keras.ops.softmax(logits), model(faces, training=False), rtol=1e-4, atol=1e-5)
    assert len(model.layers) == len(build_model(ModelSpec("tiny")).layers)


def test_mixed_bfloat16_keeps_float32_outputs():
    model = build_model(ModelSpec("tiny"), policy="mixed_bfloat16")
    assert model.get_layer("logits").dtype_policy.name == "float32"
    assert model.get_layer("s0_conv").dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model(ModelSpec("resnet"))


def test_shipped_models_fit_the_40_mb_budget():
    """Issue 4: the shipped FER2013 runs take at most 40 MB of the repo (packing is how they fit)."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parent.parent / "models"
    sizes = [p.stat().st_size for p in shipped.rglob("*") if p.is_file()]
    assert sizes and sum(sizes) <= 40_000_000, f"models/ holds {sum(sizes) / 1e6:.1f} MB"
