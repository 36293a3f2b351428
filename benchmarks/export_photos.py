"""The training split of a `bttf prepare` cache as 256-px JPEGs, small enough to carry to a lent GPU.

A GPU session gets the working tree and up to 64 MiB of ignored paths, not ../shared or a 344 MB cache.
This writes the cache's *training* images (its validation images are left out, so the scores taken here
afterwards stay held out), read again from their source folder, short side 224, centre crop, JPEG
quality 85, keeping their folder names: 22 MiB for the 1,629 training photos of the model card's cache,
which leaves room in the 64 MiB for the PyAV wheel the GPU machine lacks (34 MiB).
`benchmarks/gpu_train.sh` trains on it.

    python benchmarks/export_photos.py cache/photos256v2 ../shared/data/photos -o gpu-data/train224
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", type=Path, help="a cache from `bttf prepare` (its index.json)")
    ap.add_argument("photos", type=Path, help="the folder the cache was prepared from")
    ap.add_argument("-o", "--out", type=Path, default=Path("gpu-data/train224"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--quality", type=int, default=85)
    args = ap.parse_args()
    index = args.cache / "index.json"
    if not index.is_file():
        print(f"{index} does not exist: give a cache made by `bttf prepare`", file=sys.stderr)
        return 2
    items = [it for it in json.loads(index.read_text())["items"] if it["split"] == "train"]
    written = missing = 0
    for it in items:
        src = args.photos / it["name"]
        bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
        if bgr is None:
            missing += 1
            continue
        h, w = bgr.shape[:2]
        s = args.size / min(h, w)
        nh, nw = max(args.size, round(h * s)), max(args.size, round(w * s))
        bgr = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        y, x = (nh - args.size) // 2, (nw - args.size) // 2
        dst = (args.out / it["name"]).with_suffix(".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        crop = bgr[y : y + args.size, x : x + args.size]
        cv2.imwrite(str(dst), crop, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
        written += 1
    size = sum(p.stat().st_size for p in args.out.rglob("*.jpg"))
    print(f"{written} training images in {args.out} ({size / 2**20:.1f} MiB); {missing} unreadable")
    return 0 if written else 2


if __name__ == "__main__":
    sys.exit(main())
