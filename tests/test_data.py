"""Loaders for the three layouts, and one clear error per kind of bad input."""

import gzip
import os

import numpy as np
import pytest
from PIL import Image

from core.data import EMOTIONS, DataError, FaceDataset, load_csv, load_dataset, stratified_split, to_face48


def _pixels(seed: int) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, 2304)))


def _kaggle_text(rows: list[tuple[int, str, str]]) -> str:
    return "emotion,pixels,Usage\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows)


@pytest.fixture
def kaggle_rows():
    return [(i % 7, _pixels(i), "Training" if i < 10 else "PublicTest") for i in range(14)]


def test_kaggle_csv_plain_and_gz_give_the_same_faces(tmp_path, kaggle_rows):
    plain = tmp_path / "fer2013.csv"
    plain.write_text(_kaggle_text(kaggle_rows))
    packed = tmp_path / "fer2013.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = load_dataset(plain), load_dataset(packed)
    assert a.images.shape == (14, 48, 48) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert a.labels.tolist() == [i % 7 for i in range(14)]
    assert a.split_names() == ["PublicTest", "Training"]
    first = np.array(kaggle_rows[0][1].split(), dtype=np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(a.images[0], first)
    assert a.fingerprint() == b.fingerprint()


def test_homework_layout_train_labelled_test_unlabelled(tmp_path):
    (tmp_path / "train.csv").write_text("label,feature\n" + "".join(f"{i % 7},{_pixels(i)}\n" for i in range(8)))
    (tmp_path / "test.csv").write_text("id,feature\n" + "".join(f"{100 + i},{_pixels(50 + i)}\n" for i in range(3)))
    data = load_dataset(tmp_path)
    assert len(data) == 11
    assert data.labelled.sum() == 8
    test = data.split("test")
    assert test.ids.tolist() == ["100", "101", "102"] and not test.labelled.any()


def test_image_folder_any_size_and_colour(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for emotion in ("happy", "Sad"):
            folder = tmp_path / split / emotion
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(folder / "a.png")
            Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(folder / "b.jpg")
    data = load_dataset(tmp_path)
    assert data.images.shape == (8, 48, 48)
    assert set(data.labels.tolist()) == {EMOTIONS.index("Happy"), EMOTIONS.index("Sad")}
    assert data.split_names() == ["PublicTest", "Training"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("emotion,pixel,Usage\n0,1 2,Training\n", "missing column 'pixels'"),
        ("emotion,pixels\n0,{short}\n", "line 2, field 'pixels': 2303 grey levels"),
        ("emotion,pixels\n0,{good}\n3,{nan}\n", "line 3, field 'pixels': value 5 is 'x'"),
        ("emotion,pixels\n9,{good}\n", "line 2, field 'emotion': '9' is not an emotion label"),
        ("emotion,pixels\n0,{big}\n", "value 1 is 256, outside 0..255"),
        ("", "the file is empty"),
        ("emotion,pixels,Usage\n", "header only"),
        ("emotion,pixels\n0,{good}\n\n3,{good}\n", "line 3 is empty"),
        ("emotion,pixels,Usage\n0,{good},Training\n3,{good},\n", "line 3, field 'Usage': '' is not a split"),
        ("emotion,pixels,Usage\n0,{good},Trainig\n", "line 2, field 'Usage': 'Trainig' is not a split"),
    ],
)
def test_bad_csv_names_file_row_and_field(tmp_path, text, message):
    good = _pixels(1)
    values = good.split()
    text = text.format(
        short=" ".join(values[:-1]),
        good=good,
        nan=" ".join(values[:4] + ["x"] + values[5:]),
        big=" ".join(["256"] + values[1:]),
    )
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_csv(path)
    assert message in str(err.value) and "bad.csv" in str(err.value)


def test_blank_lines_ending_a_file_are_not_faces(tmp_path, kaggle_rows):
    path = tmp_path / "fer.csv"
    path.write_text(_kaggle_text(kaggle_rows) + "\n\n")
    assert len(load_csv(path)) == len(kaggle_rows)


def test_unknown_emotion_folder_is_named(tmp_path):
    folder = tmp_path / "train" / "bored"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(folder / "x.png")
    with pytest.raises(DataError, match="unknown emotion folder 'bored'"):
        load_dataset(tmp_path)


def test_truncated_image_is_named(tmp_path):
    folder = tmp_path / "train" / "angry"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(folder / "x.png")
    (folder / "x.png").write_bytes((folder / "x.png").read_bytes()[:40])
    with pytest.raises(DataError, match="x.png: not a readable image"):
        load_dataset(tmp_path)


def test_missing_path():
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset("/nonexistent/fer.csv")


def test_a_path_that_cannot_be_read_is_named(tmp_path):
    pipe = tmp_path / "fer.pipe"
    os.mkfifo(pipe)  # there, but neither a file nor a folder: reading it as a folder fails with an OSError
    with pytest.raises(DataError, match=f"{pipe}: cannot be read"):
        load_dataset(pipe)
    with pytest.raises(DataError, match="~nosuchuser/fer.csv: no home directory for '~nosuchuser'"):
        load_dataset("~nosuchuser/fer.csv")


def test_upload_in_memory_is_read_like_a_file(kaggle_rows):
    data = load_csv("upload.csv", text=_kaggle_text(kaggle_rows).encode())
    assert len(data) == 14 and data.source == "upload.csv"


def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = np.repeat(np.arange(7), [100, 10, 100, 200, 100, 80, 120])
    train, val = stratified_split(labels, 0.1, seed=3, source="demo")
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    np.testing.assert_allclose(np.bincount(labels[val], minlength=7) / len(val), np.bincount(labels) / len(labels), atol=0.02)
    assert np.array_equal(val, stratified_split(labels, 0.1, seed=3, source="demo")[1])
    assert not np.array_equal(val, stratified_split(labels, 0.1, seed=4, source="demo")[1])


@pytest.mark.parametrize(
    "counts, message",
    [
        ([10, 1, 10, 10, 10, 10, 10], "fer.csv: 1 face of Disgust"),
        ([2] * 7, "fer.csv: 14 faces split 12 (training) / 2 (validation), but each part needs"),
    ],
)
def test_a_split_too_small_for_every_emotion_names_the_data_and_the_emotion(counts, message):
    with pytest.raises(DataError) as err:
        stratified_split(np.repeat(np.arange(7), counts), 0.1, seed=0, source="fer.csv")
    assert message in str(err.value)


def test_face48_crops_to_square_before_resizing():
    wide = np.zeros((100, 300), np.uint8)
    wide[:, 100:200] = 255  # a white centre square in a black wide image
    face = to_face48(Image.fromarray(wide))
    assert face.min() > 200  # only the centre square survives, not squashed black borders


def _one_image_folder(tmp_path, image: Image.Image, name: str, **save) -> np.ndarray:
    folder = tmp_path / "train" / "happy"
    folder.mkdir(parents=True)
    image.save(folder / name, **save)
    return load_dataset(tmp_path).images[0]


def test_image_folder_turns_photos_by_their_exif_orientation(tmp_path):
    stored = np.zeros((48, 96), np.uint8)
    stored[:24] = 255  # stored sideways: white on top; shown turned 90 degrees clockwise, white on the right
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    face = _one_image_folder(tmp_path, Image.fromarray(stored), "a.jpg", quality=95, exif=exif.tobytes())
    assert face[:, :20].mean() < 30 and face[:, 28:].mean() > 225


def test_image_folder_rescales_16_bit_grey_instead_of_clipping(tmp_path):
    grey16 = np.full((48, 48), 16384, np.uint16)
    grey16[:, 24:] = 49152  # a quarter and three quarters of the 16-bit range
    face = _one_image_folder(tmp_path, Image.fromarray(grey16), "a.png")
    assert abs(int(face[0, 0]) - 64) <= 1 and abs(int(face[0, -1]) - 191) <= 1


def test_image_folder_reads_8_bit_values_in_a_16_bit_file_as_8_bit(tmp_path):
    """A uint16 array of 0..255 saved as is: its grey levels, not 1/257 of them (a black face)."""
    grey16 = np.full((48, 48), 40, np.uint16)
    grey16[:, 24:] = 200
    face = _one_image_folder(tmp_path, Image.fromarray(grey16), "a.png")
    assert int(face[0, 0]) == 40 and int(face[0, -1]) == 200


def test_dataset_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        FaceDataset(np.zeros((2, 48, 47), np.uint8), np.zeros(2, int), np.array(["a", "b"]), np.array(["1", "2"]), "x")


def test_the_gpu_bundle_gives_back_the_same_faces_and_fingerprint(tmp_path, kaggle_rows):
    """tools/gpu/bundle.py: what trains on a lent GPU must be our data set to the byte
    (same fingerprint: same validation split, runs that ``combine`` can join)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bundle", Path(__file__).parent.parent / "tools" / "gpu" / "bundle.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    original = tmp_path / "fer2013.csv.gz"
    original.write_bytes(gzip.compress(_kaggle_text(kaggle_rows).encode()))
    fingerprint = bundle.pack(original, tmp_path / "bundle")
    assert bundle.unpack(tmp_path / "bundle", tmp_path / "again.csv") == 14
    again = load_dataset(tmp_path / "again.csv")
    assert fingerprint == again.fingerprint() == load_dataset(original).fingerprint()
    assert bundle.unpack(tmp_path / "bundle", tmp_path / "ends.csv", rows=2) == 4
    ends = load_dataset(tmp_path / "ends.csv")
    np.testing.assert_array_equal(ends.images, again.images[[0, 1, 12, 13]])
    assert ends.splits.tolist() == ["Training", "Training", "PublicTest", "PublicTest"]
