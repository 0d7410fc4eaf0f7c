"""FER2013 small enough to travel to a lent GPU machine, and back into a CSV there.

The device tool sends at most 64 MiB with the working tree, and the data set's
CSV is 87 MB even gzipped; its grey levels as raw bytes, xz-compressed, are 58 MB.
``unpack`` writes the same rows in the competition's CSV layout, so
``python -m core`` reads it as it reads the original and the runs trained there
carry the same data fingerprint: their validation split is ours, and ``combine``
joins them with the runs trained here.

    python tools/gpu/bundle.py pack ../shared/fer2013/fer2013.csv.gz .gpu   # here
    python3 tools/gpu/bundle.py unpack .gpu /tmp/fer2013.csv                # there

The bundle is the data set: ``.gitignore`` keeps ``.gpu/`` out of git.
"""

from __future__ import annotations

import argparse
import lzma
import sys
from pathlib import Path

import numpy as np

PIXELS, META = "pixels.u8.xz", "meta.npz"


def pack(csv: Path, folder: Path) -> str:
    from core.data import load_csv

    data = load_csv(csv)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / META, labels=data.labels.astype(np.int64), splits=data.splits.astype(str))
    raw = np.ascontiguousarray(data.images, np.uint8).tobytes()  # (N, 48, 48) row-major
    (folder / PIXELS).write_bytes(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    return data.fingerprint()


def unpack(folder: Path, csv: Path, rows: int | None = None) -> int:
    """Write the bundle as a CSV; ``rows``: only that many of each end (Training
    comes first, PublicTest last), for a dry run on a CPU."""
    images = np.frombuffer(lzma.decompress((folder / PIXELS).read_bytes()), np.uint8).reshape(-1, 48 * 48)
    meta = np.load(folder / META)
    labels, splits = meta["labels"], meta["splits"]
    if rows:
        keep = np.r_[0:rows, len(labels) - rows:len(labels)]
        images, labels, splits = images[keep], labels[keep], splits[keep]
    grey = [str(i) for i in range(256)]
    tmp = csv.with_name(f".{csv.name}.tmp")
    with open(tmp, "w") as out:
        out.write("emotion,pixels,Usage\n")
        for label, row, split in zip(labels, images.tolist(), splits):
            out.write(f"{label},{' '.join(grey[v] for v in row)},{split}\n")
    tmp.replace(csv)
    return len(labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("csv", type=Path)
    p.add_argument("folder", type=Path)
    p = sub.add_parser("unpack")
    p.add_argument("folder", type=Path)
    p.add_argument("csv", type=Path)
    p.add_argument("--rows", type=int, help="a dry run: this many rows of each end")
    args = parser.parse_args()
    if args.command == "pack":
        print("fingerprint", pack(args.csv, args.folder))
    else:
        print("rows", unpack(args.folder, args.csv, args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
