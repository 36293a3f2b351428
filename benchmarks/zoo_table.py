"""The README's zoo table: every model, the same short training run, one validation table.

    python benchmarks/zoo_table.py CACHE [--steps 150] [--image-size 96] [--out runs/zoo]

CACHE is a `bttf prepare` cache (the README uses ../shared/data/photos at 256 px, val fraction 0.1,
seed 0). Each model is trained with `bttf train` (its own default loss) for the same steps, batch
and crop size, then all checkpoints are scored together by `bttf eval` on the validation split;
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bttf.models import get_spec

# eccv16 and siggraph17 (32-34 M parameters) take hours on a 2-core CPU:
# add them with --models on a GPU
MODELS = (
    "mean-chroma",
    "cnn-ae",
    "unet-ae",
    "resnet18",
    "resnet18-bins",
    "pix2pix",
    "fastcolor",
    "fastcolor-l2",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default="runs/zoo")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    out = Path(args.out)
    weights, seconds = [], {}
    for name in args.models.split(","):
        run = out / name
        stride = get_spec(name).stride  # crops must be a multiple of it (pix2pix: 64)
        size = -(-args.image_size // stride) * stride
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bttf",
                "train",
                args.cache,
                "--model",
                name,
                "--out",
                str(run),
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--image-size",
                str(size),
                "--val-every",
                str(args.steps),
                "--val-images",
                "16",
                "--seed",
                "0",
                "--overwrite",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds[name] = time.perf_counter() - t0
        weights += ["--weights", str(run / "last.safetensors")]
        print(f"{name}: trained in {seconds[name]:.0f} s", file=sys.stderr, flush=True)
    report = subprocess.run(
        [sys.executable, "-m", "bttf", "eval", args.cache, *weights, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(report.stdout)
    print(
        f"{data['images']} validation images at {data['size']} px; truth colorfulness "
        f"{data['colorfulness_truth']:.1f}; {args.steps} steps x {args.batch_size} images of "
        f"{args.image_size} px each\n"
    )
    print("| model | train s | PSNR | SSIM | colorfulness | AuC | AuC rebal |")
    print("|---|---|---|---|---|---|---|")
    for r in data["results"]:
        s = seconds.get(r["name"])
        print(
            f"| {r['name']} | {'' if s is None else f'{s:.0f}'} | {float(r['psnr']):.2f} | "
            f"{r['ssim']:.3f} | {r['colorfulness']:.1f} | {r['auc']:.4f} | "
            f"{r['auc_rebal']:.4f} |"
        )


if __name__ == "__main__":
    main()
