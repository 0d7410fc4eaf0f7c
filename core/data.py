"""FER2013-style face data: one in-memory type, loaders for the layouts users have.

Every loader returns a :class:`FaceDataset` of uint8 48x48 grey faces with labels
in FER2013's order. Bad input raises :class:`DataError` naming the file, the row
(1-based line number as a text editor shows it) and the field, because a user
staring at a 32k-row CSV needs to know *where* it is broken, and rows are never
dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

EMOTIONS: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
SIZE = 48
N_PIXELS = SIZE * SIZE
UNLABELLED = -1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

# Split names users write, mapped to the canonical FER2013 names so that
# "train" in a folder tree and "Training" in the Kaggle CSV mean the same thing.
_SPLIT_ALIASES = {
    "train": "Training",
    "training": "Training",
    "test": "PublicTest",
    "publictest": "PublicTest",
    "privatetest": "PrivateTest",
    "val": "Validation",
    "valid": "Validation",
    "validation": "Validation",
}


class DataError(ValueError):
    """Input data that cannot be used; the message names file, row and field."""


@dataclass(frozen=True)
class FaceDataset:
    """Faces in memory.

    images: (N, 48, 48) uint8 grey levels 0..255.
    labels: (N,) int64 in 0..6 (FER2013 order), UNLABELLED (-1) where unknown.
    splits: (N,) canonical split names ("Training", "PublicTest", ...).
    ids:    (N,) where each face came from ("file.csv:line 12", a path, ...).
    masks:  (N, 48, 48) bool expressive regions; only the demo set has them.
    """

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    ids: np.ndarray
    source: str
    masks: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.shape[1:] != (SIZE, SIZE) or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, 48, 48) uint8, got {self.images.shape} {self.images.dtype}")
        for name in ("labels", "splits", "ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> np.ndarray:
        """Boolean mask of the faces that have a label."""
        return self.labels != UNLABELLED

    def split_names(self) -> list[str]:
        return sorted(set(self.splits.tolist()))

    def subset(self, index: np.ndarray) -> "FaceDataset":
        """Rows selected by an integer index or a boolean mask."""
        return FaceDataset(
            images=self.images[index],
            labels=self.labels[index],
            splits=self.splits[index],
            ids=self.ids[index],
            source=self.source,
            masks=None if self.masks is None else self.masks[index],
        )

    def split(self, name: str) -> "FaceDataset":
        """The faces of one split (canonical or alias name); DataError if absent."""
        canonical = canonical_split(name)
        mask = self.splits == canonical
        if not mask.any():
            raise DataError(f"{self.source}: no '{canonical}' rows (splits present: {', '.join(self.split_names())})")
        return self.subset(mask)

    def fingerprint(self) -> str:
        """Content hash: two loads of the same faces give the same run ids."""
        h = hashlib.sha256()
        for array in (self.images, self.labels.astype(np.int64), self.splits.astype(str)):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]

    def class_counts(self) -> np.ndarray:
        """(7,) number of labelled faces per emotion."""
        return np.bincount(self.labels[self.labelled], minlength=len(EMOTIONS))


def canonical_split(name: str) -> str:
    return _SPLIT_ALIASES.get(name.strip().lower(), name.strip())


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with every class in the same proportion in both parts;
    DataError naming ``source`` when some emotion has too few faces for that."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if val_fraction <= 0:
        return index, index[:0]
    _check_stratifiable(labels, val_fraction, source)
    train, val = train_test_split(index, test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(val)


def _check_stratifiable(labels: np.ndarray, val_fraction: float, source: str) -> None:
    """sklearn's own errors for these name neither the data nor the emotion, so a user cannot tell what to add."""
    counts = np.bincount(labels, minlength=len(EMOTIONS))
    single = [EMOTIONS[label] for label in np.flatnonzero(counts == 1)]
    if single:
        raise DataError(f"{source}: 1 face of {', '.join(single)}; a validation split that keeps every "
                        "emotion's share needs at least 2 faces of each")
    present = int((counts > 0).sum())
    n_val = math.ceil(val_fraction * len(labels))  # as sklearn rounds it
    if min(n_val, len(labels) - n_val) < present:
        raise DataError(f"{source}: {len(labels)} faces split {len(labels) - n_val} (training) / {n_val} (validation), "
                        f"but each part needs at least one face of each of the {present} emotions present")


# --------------------------------------------------------------------------- CSV


def _read_csv(path: Path | str, text: bytes | None = None) -> pd.DataFrame:
    """All columns as strings, so that nothing is coerced or dropped behind our back; blank lines
    are kept as rows too, because skipping them would shift every later line number we report."""
    try:
        source = io.BytesIO(text) if text is not None else path
        compression = "gzip" if str(path).endswith(".gz") else None
        return pd.read_csv(source, dtype=str, keep_default_na=False, compression=compression, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable CSV file ({str(err).splitlines()[0]})") from None


def _without_blank_rows(frame: pd.DataFrame, path: Path | str) -> pd.DataFrame:
    """``frame`` less the blank lines that end the file (editors add them; they hold no face);
    a blank line between faces is an error at its line, not a row dropped silently."""
    # Only rows whose first field is empty can be blank: stripping every pixel string of FER2013 took seconds.
    blank = frame.iloc[:, 0].str.strip().eq("").to_numpy(copy=True)
    maybe = np.flatnonzero(blank)
    blank[maybe] = frame.iloc[maybe].apply(lambda column: column.str.strip().eq("")).all(axis=1).to_numpy()
    faces = np.flatnonzero(~blank)
    frame = frame.iloc[: faces[-1] + 1 if faces.size else 0]
    if blank[: len(frame)].any():
        row = int(np.flatnonzero(blank)[0])
        raise DataError(f"{path}: line {row + 2} is empty (every line after the header must hold one face)")
    return frame


def _parse_pixels(column: pd.Series, path: Path | str, field_name: str) -> np.ndarray:
    """(N, 48, 48) uint8 from space-separated grey levels; exact error on the first bad row."""
    images = np.empty((len(column), N_PIXELS), dtype=np.uint8)
    for i, text in enumerate(column.to_numpy()):
        try:  # np.fromstring parses in C: the 32k-row FER2013 file loads in seconds
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except ValueError:  # a non-number: let the slow path say which one
            values = np.empty(0, dtype=np.int64)
        if values.size != N_PIXELS or values.min() < 0 or values.max() > 255:
            _raise_pixel_error(text, path, i, field_name)
        images[i] = values
    return images.reshape(-1, SIZE, SIZE)


def _raise_pixel_error(text: str, path: Path | str, row: int, field_name: str) -> None:
    where = f"{path}: line {row + 2}, field '{field_name}'"
    tokens = text.split()
    for position, token in enumerate(tokens, start=1):
        try:
            value = int(token)
        except ValueError:
            raise DataError(f"{where}: value {position} is '{token[:20]}', not a whole number") from None
        if not 0 <= value <= 255:
            raise DataError(f"{where}: value {position} is {value}, outside 0..255")
    raise DataError(f"{where}: {len(tokens)} grey levels, expected {N_PIXELS} (48x48)")


def _parse_labels(column: pd.Series, path: Path | str, field_name: str) -> np.ndarray:
    labels = pd.to_numeric(column.str.strip(), errors="coerce")
    bad = labels.isna() | ~labels.isin(range(len(EMOTIONS)))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: line {row + 2}, field '{field_name}': '{column.iloc[row]}' is not an emotion label 0..6"
        )
    return labels.to_numpy(dtype=np.int64)


def _require_columns(frame: pd.DataFrame, path: Path | str, needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column {', '.join(repr(c) for c in missing)} "
            f"(found {', '.join(repr(c) for c in frame.columns)})"
        )


def load_csv(path: Path | str, text: bytes | None = None) -> FaceDataset:
    """One CSV (plain or .gz) in either layout, told apart by its header.

    Kaggle ``emotion,pixels[,Usage]``; homework ``label,feature`` (training) or
    ``id,feature`` (unlabelled test). ``text`` lets the dashboard pass an upload
    that stays in memory.
    """
    frame = _without_blank_rows(_read_csv(path, text), path)
    columns = set(frame.columns)
    if len(frame) == 0:
        raise DataError(f"{path}: header only, no rows")
    row_ids = np.array([f"{Path(str(path)).name}:line {i + 2}" for i in range(len(frame))])
    if {"emotion", "pixels"} <= columns:
        labels = _parse_labels(frame["emotion"], path, "emotion")
        images = _parse_pixels(frame["pixels"], path, "pixels")
        usage = frame["Usage"] if "Usage" in columns else pd.Series(["Training"] * len(frame))
        splits = np.array([canonical_split(u) for u in usage])
        # A blank or misspelt Usage must not move a test face into training (or out of every split).
        if len(unknown := np.flatnonzero(~np.isin(splits, list(set(_SPLIT_ALIASES.values()))))):
            i = unknown[0]
            raise DataError(f"{path}: line {i + 2}, field 'Usage': {usage.iloc[i]!r} is not a split "
                            "(Training, PublicTest or PrivateTest)")
    elif {"label", "feature"} <= columns:
        labels = _parse_labels(frame["label"], path, "label")
        images = _parse_pixels(frame["feature"], path, "feature")
        splits = np.full(len(frame), "Training")
    elif {"id", "feature"} <= columns:
        labels = np.full(len(frame), UNLABELLED, dtype=np.int64)
        images = _parse_pixels(frame["feature"], path, "feature")
        splits = np.full(len(frame), canonical_split("test"))  # the unlabelled public test set
        row_ids = frame["id"].to_numpy(dtype=str)
    else:
        _require_columns(frame, path, ("emotion", "pixels"))
        raise AssertionError("unreachable")
    return FaceDataset(images=images, labels=labels, splits=splits, ids=row_ids, source=str(path))


# ----------------------------------------------------------------- image folders


def to_face48(image: Image.Image) -> np.ndarray:
    """(48, 48) uint8 grey from any PIL image: upright (:func:`upright_rgb`), centre square crop, grey, resize.

    Cropping before resizing keeps a non-square photo from being squashed.
    """
    grey = Image.fromarray(upright_rgb(image)).convert("L")
    w, h = grey.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    grey = grey.crop((left, top, left + side, top + side))
    return np.asarray(grey.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)


def upright_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any PIL image as a viewer shows it; photo uploads and image folders
    both decode through here, so one picture gives one face either way.

    Honours the EXIF orientation tag (phones store photos sideways and say so
    in EXIF), composites transparency on white, and turns palette, grey, CMYK
    and 16-bit images into 8-bit RGB (16-bit rescaled, not clipped).
    """
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - malformed EXIF: keep the pixels as stored
        pass
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """8-bit RGB array from any PIL mode."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit (or 32-bit) grey: scale the full range to 0..255 rather than clip it.
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        else:
            # All values <= 255: 8-bit data in a 16-bit file (a uint16 array saved as is), not a
            # photo at 1/257 of full brightness, which would reach the model as a black square.
            top = 65535.0 if arr.size and arr.max() > 255 else 255.0
        grey = np.clip(np.nan_to_num(arr) * (255.0 / top), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(image), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK through its embedded ICC profile when it has one, else PIL's plain formula."""
    profile = image.info.get("icc_profile")
    if profile:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - a bad profile: fall back to the formula
            pass
    return image.convert("RGB")


def read_image(path: Path) -> Image.Image:
    """A PIL image fully decoded now, so a truncated file fails here, by name."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def _emotion_of_folder(folder: Path) -> int:
    name = folder.name.strip()
    for index, emotion in enumerate(EMOTIONS):
        if name.lower() == emotion.lower() or name == str(index):
            return index
    raise DataError(f"{folder}: unknown emotion folder '{name}' (expected one of {', '.join(EMOTIONS)} or 0..6)")


def load_folder(root: Path | str) -> FaceDataset:
    """``<split>/<emotion>/*.png|jpg`` (any size or colour) into 48x48 grey faces."""
    root = Path(root)
    images, labels, splits, ids = [], [], [], []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for emotion_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = _emotion_of_folder(emotion_dir)
            for file in sorted(emotion_dir.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                images.append(to_face48(read_image(file)))
                labels.append(label)
                splits.append(canonical_split(split_dir.name))
                ids.append(str(file.relative_to(root)))
    if not images:
        raise DataError(f"{root}: no images found (expected <split>/<emotion>/*.png or *.jpg)")
    return FaceDataset(
        images=np.stack(images),
        labels=np.array(labels, dtype=np.int64),
        splits=np.array(splits),
        ids=np.array(ids),
        source=str(root),
    )


# ------------------------------------------------------------------- entry point


def _csv_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith((".csv", ".csv.gz")))


def concat(datasets: list[FaceDataset], source: str) -> FaceDataset:
    return FaceDataset(
        images=np.concatenate([d.images for d in datasets]),
        labels=np.concatenate([d.labels for d in datasets]),
        splits=np.concatenate([d.splits for d in datasets]),
        ids=np.concatenate([d.ids for d in datasets]),
        source=source,
    )


def user_path(text: str | Path) -> Path:
    """``text`` with a leading ``~`` or ``~user`` expanded; DataError rather than pathlib's
    RuntimeError when this server has no such home directory."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise DataError(f"{text}: no home directory for '{Path(text).parts[0]}' on this server") from None


def load_dataset(source: str | Path) -> FaceDataset:
    """``"demo"``, a CSV file, a folder of CSVs (homework ``train.csv``/``test.csv``), or an image tree."""
    if str(source) == "demo":
        from core.demo import make_demo

        return make_demo()
    path = user_path(source)
    try:
        return _load_path(path)
    except OSError as err:  # a folder we may not read, a pipe or device, ...: a message, not a traceback
        raise DataError(f"{err.filename or path}: cannot be read ({err.strerror or err})") from None


def _load_path(path: Path) -> FaceDataset:
    """The loader is told by what the path is: a CSV file, a folder of CSVs, else an image tree."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        return load_csv(path)
    csvs = _csv_files(path)
    if csvs:
        return concat([load_csv(p) for p in csvs], source=str(path))
    return load_folder(path)
