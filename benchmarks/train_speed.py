"""Training throughput: images/s of `bttf train`'s loop against the model's own compute.

On a small generated cache (colour images made here, run through `bttf.training.prepare`):

  loop      bttf.training.train() for a few dozen steps (batches made by its data thread:
            cache read, random resized crop, flip, jitter), timed from its step events after a
            warm-up, so the end-of-run save and validation are not counted
  compute   the same model, loss and batch size on random tensors: forward + loss + backward,
            and forward + loss + backward + AdamW step (what the loop does besides data)

The data pipeline is not the bottleneck when loop / compute is close to 1.

    python benchmarks/train_speed.py                       # fastcolor, batch 16 at 128 px
    python benchmarks/train_speed.py --model fastcolor-l2 --batch-size 32 --json
    python benchmarks/train_speed.py --device cuda --batch-size 64 --image-size 256
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """`n` colourful PNGs: smooth random colour fields with edges and texture."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        img += rng.normal(0, 8, img.shape).astype(np.float32)
        cv2.circle(
            img,
            tuple(int(v) for v in rng.integers(0, size, 2)),
            size // 6,
            tuple(float(v) for v in rng.integers(0, 256, 3)),
            -1,
        )
        cv2.imwrite(str(folder / f"img_{i:04d}.png"), np.clip(img, 0, 255).astype(np.uint8))


def make_cache(tmp: Path, n: int, size: int) -> Path:
    from bttf.training import PrepareConfig, prepare

    make_images(tmp / "images", n, size)
    cache = tmp / "cache"
    prepare(PrepareConfig(inputs=(tmp / "images",), out=cache, size=size, val_fraction=0.05))
    return cache


def loop_speed(cache: Path, out: Path, args: argparse.Namespace) -> dict:
    """images/s of train() between step `warmup` and the last step but one."""
    from bttf.training import TrainConfig, train

    times: dict[int, float] = {}
    ema: list[float] = []

    def progress(e) -> None:
        if e.kind in ("step", "val"):
            times[e.step] = time.perf_counter()
            ema.append(e.images_per_s)

    total = args.warmup + args.steps + 1
    cfg = TrainConfig(
        data=(cache,),
        model=args.model,
        out=out,
        steps=total,
        batch_size=args.batch_size,
        image_size=args.image_size,
        threads=args.threads,
        workers=args.workers,
        val_every=10**9,
        val_images=0,
        sample_images=0,
        overwrite=True,
        device=args.device,
    )
    train(cfg, progress)
    a, b = args.warmup, args.warmup + args.steps  # the last step also saves: left out
    ips = args.steps * args.batch_size / (times[b] - times[a])
    return {
        "images_per_s": round(ips, 2),
        "loop_reported_ema": round(ema[-2], 2),
        "steps_timed": args.steps,
    }


def compute_speed(args: argparse.Namespace, threads: int) -> dict:
    """images/s of forward + loss + backward (and + optimizer step) on random batches."""
    import torch

    from bttf.models import create_model, get_spec
    from bttf.models.bins import Q
    from bttf.training.losses import build_loss, resolve_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    spec = get_spec(args.model)
    model = create_model(args.model, pretrained=False).train().to(dev)
    model.to(memory_format=torch.channels_last)  # as the loop (channels_last=True)
    kind = resolve_loss(getattr(model, "default_loss", "auto"), spec.output)
    prior = torch.full((Q,), 1.0 / Q) if spec.output == "bins" else None
    criterion = build_loss(kind, spec.output, prior).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B, s = args.batch_size, args.image_size
    L = (torch.rand(B, 1, s, s, device=dev) * 100).contiguous(memory_format=torch.channels_last)
    ab = torch.randn(B, 2, s, s, device=dev) * 30

    def step(with_opt: bool) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):  # as the loop's amp
            loss = criterion(model(L), ab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if with_opt:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    out = {}
    for name, with_opt in (("fwd_bwd", False), ("fwd_bwd_step", True)):
        for _ in range(args.warmup):
            step(with_opt)
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(with_opt)
        if cuda:
            torch.cuda.synchronize(dev)
        out[f"{name}_images_per_s"] = round(args.steps * B / (time.perf_counter() - t0), 2)
    out["loss"] = kind
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fastcolor")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=96, help="images in the generated cache")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="the loop's batch threads")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the loop's own, all cores)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or cores
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bttf-train-bench-") as d:
        tmp = Path(d)
        cache = make_cache(tmp, args.images, 256)
        loop = loop_speed(cache, tmp / "run", args)
    compute = compute_speed(args, threads)
    training = subprocess.run(
        ["pgrep", "-f", "bttf train"], capture_output=True, text=True, check=False
    )
    r = {
        "model": args.model,
        "device": args.device,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "torch_threads": threads,
        "workers": args.workers,
        **loop,
        **compute,
        "loop_over_fwd_bwd": round(loop["images_per_s"] / compute["fwd_bwd_images_per_s"], 3),
        "loop_over_fwd_bwd_step": round(
            loop["images_per_s"] / compute["fwd_bwd_step_images_per_s"], 3
        ),
        "conditions": {
            "cores": cores,
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "other_training_running": bool(training.stdout.strip()),
        },
    }
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(
        f"{args.model}, batch {args.batch_size} at {args.image_size} px, {threads} torch "
        f"threads, {args.workers} data thread(s); {args.steps} steps timed"
    )
    print(f"  train() loop              {r['images_per_s']:8.1f} images/s")
    print(
        f"  forward+backward alone    {r['fwd_bwd_images_per_s']:8.1f} images/s "
        f"(loop / this = {r['loop_over_fwd_bwd']:.2f})"
    )
    print(
        f"  ... + AdamW step          {r['fwd_bwd_step_images_per_s']:8.1f} images/s "
        f"(loop / this = {r['loop_over_fwd_bwd_step']:.2f})"
    )
    print(f"  conditions: {r['conditions']}")


if __name__ == "__main__":
    main()
