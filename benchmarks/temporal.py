"""Acceptance measurement of the temporal stabilizer (bttf.pipeline.temporal.Stabilizer).

Everything runs through the real streaming engine (`bttf.pipeline.engine.colorize_video`):
each test sequence is written as a gray video, colorized with the stabilizer off and on, read
back and scored against its colour original:

  - flicker: warping error (Lai et al. 2018, OpenCV DIS flow on the gray input) and CDC
    (Liu et al. 2021), both from bttf.metrics.video; lower is better;
  - fidelity: PSNR / SSIM against the truth (bttf.metrics.image), colourfulness;
  - a two-shot clip: the second shot colorized after the first must equal the second shot
    colorized alone (no colour carried across the cut);
  - cost: wall time of colorize_video at 360p on the CPU with and without the stabilizer, and
    the time spent inside the stabilizer itself.

Sequences: the DAVIS clips in ../shared/data/video (folders of JPEGs, resized to 640x360) and
synthetic camera pans (with a slow zoom) over Kodak photos.

Colour sources (--source):
  model   the colorizer as given by --model / --weights (use this with trained weights);
  random  --model's architecture with random weights and its 313-bin head rescaled so the
          logits have a spread (std 3): saturated random colours that depend on the content,
          so they flicker as the content moves (a stress test; PSNR is meaningless here);
  proxy   a stand-in "per-frame colorizer" built from the truth: per pixel a two-mode
          distribution (the true ab and the true ab rotated by 120 degrees in hue) whose mixing
          weight is redrawn on every frame from a smooth random field that favours the truth,
          plus per-bin noise. It flickers between plausible modes the way an unsure per-frame
          model does, and its PSNR is meaningful;
  proxy-flip  the same with near-binary mode weights and little noise: a confident model that
          changes its mind (unimodal predictions flipping between two colours), the case where
          blending logits (a product of experts) averages the two colours.
The default is `--source model` when the model has trained weights (the shipped file or
--weights), else `--source random proxy proxy-flip`.

    python benchmarks/temporal.py                          # about 20 min a source on 2 cores
    python benchmarks/temporal.py --quick                  # fewer frames and settings
    python benchmarks/temporal.py --source model --weights fastcolor.safetensors
    python benchmarks/temporal.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from torch import nn

from bttf.color import rgb_to_lab
from bttf.metrics.image import colorfulness, psnr, ssim
from bttf.metrics.video import (
    FLOW_METHOD,
    cdc,
    pair_flows,
    pair_warping_error,
    rgb_to_gray,
)
from bttf.models import create_model, get_spec, register_model, save_weights
from bttf.models.bins import soft_encode
from bttf.pipeline import engine
from bttf.pipeline.cuts import detect_cuts, iter_frames, list_frame_files
from bttf.pipeline.stages import render_dims
from bttf.pipeline.temporal import Stabilizer, StabilizerParams

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = (640, 360)  # 360p, width x height

log = logging.getLogger("benchmarks.temporal")


# ---------------------------------------------------------------------------------------------
# Test sequences (uint8 RGB (T, H, W, 3), the truth)


def load_clips(video_dir: Path, max_frames: int | None) -> dict[str, np.ndarray]:
    clips = {}
    for d in sorted(p for p in video_dir.iterdir() if p.is_dir()):
        files = list_frame_files(d)[:max_frames]
        frames = [
            cv2.cvtColor(
                cv2.resize(cv2.imread(str(f)), SIZE, interpolation=cv2.INTER_AREA),
                cv2.COLOR_BGR2RGB,
            )
            for f in files
        ]
        clips[d.name] = np.stack(frames)
    return clips


def make_pan(photo: Path, n: int, speed: float, seed: int) -> np.ndarray:
    """A camera pan (speed px/frame, wavering direction) with a slow zoom over a photo."""
    img = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    scale = max(SIZE[0] / w, SIZE[1] / h) * 1.6  # room to move
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi)
    cx, cy = w / 2, h / 2
    frames = []
    for t in range(n):
        ang = theta + 0.6 * np.sin(t / 9.0)
        x = cx + speed / scale * t * np.cos(ang) - speed / scale * n / 2 * np.cos(theta)
        y = cy + speed / scale * t * np.sin(ang) * 0.5
        s = scale * (1.0 + 0.002 * t)
        # output pixel p shows photo point (p - centre_out) / s + (x, y)
        m = np.float32([[s, 0, SIZE[0] / 2 - s * x], [0, s, SIZE[1] / 2 - s * y]])
        frames.append(
            cv2.warpAffine(img, m, SIZE, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        )
    return np.stack(frames)


def load_pans(photo_dir: Path, count: int, n: int) -> dict[str, np.ndarray]:
    photos = sorted(photo_dir.glob("*.png"))[:count]
    speeds = [1.0, 3.0, 6.0, 2.0]
    return {
        f"pan_{p.stem}_{speeds[i % 4]:g}px": make_pan(p, n, speeds[i % 4], i)
        for i, p in enumerate(photos)
    }


def write_gray_video(path: Path, truth: np.ndarray, fps: int = 24) -> None:
    """The truth's luma as a lossless (x264 qp 0) yuv420p video: the engine's input."""
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = truth.shape[2], truth.shape[1], "yuv420p"
        st.options = {"qp": "0", "preset": "ultrafast"}
        for rgb in truth:
            frame = av.VideoFrame.from_ndarray(rgb_to_gray(rgb), format="gray")
            for pkt in st.encode(frame.reformat(format="yuv420p")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def read_video(path: Path) -> np.ndarray:
    return np.stack([f for _, f in iter_frames(path, gray=False)])


# ---------------------------------------------------------------------------------------------
# Colour sources


class ProxyColorizer(nn.Module):
    """A per-frame 'colorizer' that flickers between two plausible modes (see the module doc).

    Frames arrive in order through the engine; `ProxyColorizer.truth_ab` holds the truth's ab at
    the logits' resolution for the sequence being colorized.
    """

    truth_ab: torch.Tensor | None = None  # (T, 2, h, w)
    cursor = 0
    bias, gain, noise = 0.6, 2.0, 0.3  # mode weight sigmoid(bias + gain * field); logit noise

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    @classmethod
    def start(cls, truth: np.ndarray, render_hw: tuple[int, int]) -> None:
        h, w = render_hw[0] // 4, render_hw[1] // 4
        small = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in truth])
        rgb = torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255.0
        cls.truth_ab = rgb_to_lab(rgb)[:, 1:]
        cls.cursor = 0

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        n = L.shape[0]
        ab = type(self).truth_ab[self.cursor : self.cursor + n]
        if ab.shape[0] != n or tuple(ab.shape[-2:]) != (L.shape[-2] // 4, L.shape[-1] // 4):
            raise RuntimeError("proxy out of step with the engine")
        type(self).cursor += n
        rot = math.radians(120)
        alt = torch.stack(
            [
                ab[:, 0] * math.cos(rot) - ab[:, 1] * math.sin(rot),
                ab[:, 0] * math.sin(rot) + ab[:, 1] * math.cos(rot),
            ],
            dim=1,
        )
        q_true, q_alt = soft_encode(ab), soft_encode(alt)
        h, w = ab.shape[-2:]
        out = []
        for i in range(n):
            # noise seeded by the frame's content: the same frame gets the same draw in any run
            g = torch.Generator().manual_seed(int(ab[i].abs().sum() * 1000) % 2**31)
            field = torch.randn(1, 1, max(2, h // 8), max(2, w // 8), generator=g)
            field = torch.nn.functional.interpolate(
                field, size=(h, w), mode="bicubic", align_corners=False
            )
            field = field / field.std().clamp_min(1e-6)
            z = torch.sigmoid(self.bias + self.gain * field)[0]
            p = z * q_true[i] + (1 - z) * q_alt[i]
            out.append(torch.log(p + 1e-4) + self.noise * torch.randn(p.shape, generator=g))
        return torch.stack(out).to(L.dtype)


register_model(
    "bench-proxy",
    output="bins",
    stride=4,
    render_size=256,
    description="benchmark stand-in (temporal.py)",
)(ProxyColorizer)


def random_weights(model: str, path: Path, seed: int = 0) -> Path:
    """`model` with random weights and a rescaled 313-bin head (logit std 3), saved to `path`."""
    spec = get_spec(model)
    torch.manual_seed(seed)
    net = create_model(model, pretrained=False).eval()
    if spec.output == "bins":
        head = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 313][-1]
        with torch.no_grad():
            head.weight.normal_()
            L = torch.linspace(0, 100, 256 * 448).view(1, 1, 256, 448)
            std = float(net(L).std())
            head.weight.mul_(3.0 / max(std, 1e-12))
            if head.bias is not None:
                head.bias.zero_()
    return save_weights(path, net, spec.name, {})


# ---------------------------------------------------------------------------------------------
# Running the engine


@dataclass(frozen=True)
class Setting:
    label: str
    temporal: bool
    params: StabilizerParams | None = None  # None: the engine's default stabilizer


def make_stabilizer(config, params: StabilizerParams | None, timer: list[float] | None = None):
    """The stabilizer the engine would build for `config`, Stabilizer(params) in its place,
    its calls timed into `timer`; None with the stabilizer off."""
    st = engine.build_stabilizer(config)
    if st is None:
        return None
    if params is not None:
        st = Stabilizer(params)
    if timer is None:
        return st

    class Timed:  # the stabilizer, its calls timed
        def __getattr__(self, name):
            return getattr(st, name)

        def __call__(self, *args, **kw):
            t = time.perf_counter()
            try:
                return st(*args, **kw)
            finally:
                timer[0] += time.perf_counter() - t

    return Timed()


def colorize(src: Path, dst: Path, setting: Setting, base: dict, timer: list[float] | None = None):
    config = engine.ColorizeConfig(temporal=setting.temporal, overwrite=True, audio=False, **base)
    stabilizer = make_stabilizer(config, setting.params, timer)
    return engine.colorize_video(src, dst, config, stabilizer=stabilizer)


def score(out: np.ndarray, truth: np.ndarray, pairs) -> dict[str, float]:
    we = float(np.mean([pair_warping_error(out[i], out[i + 1], p) for i, p in enumerate(pairs)]))

    def f(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32) / 255.0

    return {
        "warping_error": we,
        "cdc": cdc(out),
        "psnr": float(np.mean([psnr(f(o), f(t)) for o, t in zip(out, truth)])),
        "ssim": float(np.mean([ssim(f(o), f(t)) for o, t in zip(out, truth)])),
        "colorfulness": float(np.mean([colorfulness(f(o)) for o in out])),
    }


def source_config(source: str, args, work: Path) -> dict:
    if source.startswith("proxy"):
        flip = source == "proxy-flip"
        ProxyColorizer.gain, ProxyColorizer.noise = (8.0, 0.1) if flip else (2.0, 0.3)
        return {"model": "bench-proxy"}
    if source == "random":
        path = random_weights(args.model or "fastcolor", work / "random.safetensors")
        return {"weights": str(path)}
    return {"model": args.model, "weights": args.weights}


def settings_for(args) -> list[Setting]:
    out = [Setting("off", False), Setting("default", True)]
    if args.quick:
        return out
    for fusion in ("mixture", "product"):
        for s in args.strengths:
            params = StabilizerParams(strength=s, fusion=fusion)
            out.append(Setting(f"{fusion} s={s:g}", True, params))
    return out


def measure_quality(source: str, seqs: dict[str, np.ndarray], args, work: Path) -> dict:
    base = {
        **source_config(source, args, work),
        "pix_fmt": "yuv444p",
        "crf": 0,
        "preset": "ultrafast",
        "batch_size": 8,
        "render_size": args.render_size,
    }
    results: dict[str, dict] = {}
    for name, truth in seqs.items():
        src = work / f"{name}_gray.mkv"
        if not src.exists():
            write_gray_video(src, truth)
        grays = [rgb_to_gray(f) for f in truth]
        pairs = pair_flows(grays)
        ref = {
            "warping_error": float(
                np.mean(
                    [pair_warping_error(truth[i], truth[i + 1], p) for i, p in enumerate(pairs)]
                )
            ),
            "cdc": cdc(truth),
            "colorfulness": float(
                np.mean([colorfulness(f.astype(np.float32) / 255) for f in truth])
            ),
        }
        results.setdefault("truth", {})[name] = ref
        for k, setting in enumerate(settings_for(args)):
            if source.startswith("proxy"):
                short = args.render_size or 256
                rh, rw = render_dims(truth.shape[1], truth.shape[2], short, 4)
                ProxyColorizer.start(truth, (rh, rw))
            dst = work / f"{name}_{source}_{k}.mkv"
            t = time.perf_counter()
            colorize(src, dst, setting, base)
            out = read_video(dst)
            results.setdefault(setting.label, {})[name] = score(out, truth, pairs)
            log.info(
                "%s %s %s: %s (%.1fs)",
                source,
                name,
                setting.label,
                results[setting.label][name],
                time.perf_counter() - t,
            )
    return results


def summarize(results: dict, names: list[str]) -> dict[str, dict[str, float]]:
    table = {}
    for label, per in results.items():
        keys = per[names[0]].keys()
        table[label] = {k: float(np.mean([per[n][k] for n in names])) for k in keys}
    off = table["off"]
    for label, row in table.items():
        if label == "truth":
            continue
        row["we_reduction_%"] = 100 * (1 - row["warping_error"] / off["warping_error"])
        row["cdc_reduction_%"] = 100 * (1 - row["cdc"] / off["cdc"])
        row["psnr_change_db"] = row["psnr"] - off["psnr"]
    return table


def two_shot_check(source: str, clips: dict[str, np.ndarray], args, work: Path) -> dict:
    """Shot B colorized after shot A must equal shot B colorized alone (engine, stabilizer on)."""
    names = sorted(clips)
    a, b = clips[names[0]][:24], clips[names[-1]][:24]
    base = {
        **source_config(source, args, work),
        "pix_fmt": "yuv444p",
        "crf": 0,
        "preset": "ultrafast",
        "render_size": args.render_size,
    }
    both_src, b_src = work / "two_shot_gray.mkv", work / "shot_b_gray.mkv"
    write_gray_video(both_src, np.concatenate([a, b]))
    write_gray_video(b_src, b)
    outs = {}
    for label, src, truth in (("both", both_src, np.concatenate([a, b])), ("b", b_src, b)):
        if source.startswith("proxy"):
            short = args.render_size or 256
            rh, rw = render_dims(truth.shape[1], truth.shape[2], short, 4)
            ProxyColorizer.start(truth, (rh, rw))
        dst = work / f"two_shot_{label}.mkv"
        colorize(src, dst, Setting("default", True), base)
        outs[label] = read_video(dst).astype(np.int16)
    after_cut = outs["both"][len(a) :]
    diff = np.abs(after_cut - outs["b"])
    cuts = [c.frame for c in detect_cuts(both_src)]
    return {
        "shots": [names[0], names[-1]],
        "cut_expected": len(a),
        "cuts_found": cuts,
        "first_frame_after_cut_max_abs_diff": int(diff[0].max()),
        "first_5_frames_mean_abs_diff": float(diff[:5].mean()),
        "all_frames_max_abs_diff": int(diff.max()),
    }


def cost(args, work: Path, clips: dict[str, np.ndarray]) -> dict:
    """colorize_video at 360p on the CPU, default settings, stabilizer off vs on (best of N)."""
    frames = np.concatenate([c for c in clips.values()])[: args.cost_frames]
    src = work / "cost_gray.mkv"
    write_gray_video(src, frames)
    base = {"device": "cpu", "model": args.model, "weights": args.weights, "threads": args.threads}
    times: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    inside = []
    params = StabilizerParams(fusion=args.cost_fusion) if args.cost_fusion else None
    for _ in range(args.repeats):
        for label in ("off", "on"):
            timer = [0.0]
            c0 = time.process_time()
            stats = colorize(
                src, work / "cost_out.mp4", Setting(label, label == "on", params), base, timer
            )
            cpu[label].append(time.process_time() - c0)
            times[label].append(stats.seconds)
            if label == "on":
                inside.append(timer[0] / stats.seconds)
    off, on = min(times["off"]), min(times["on"])
    return {
        "frames": len(frames),
        "size": f"{SIZE[0]}x{SIZE[1]}",
        "fusion": args.cost_fusion or "default",
        "torch_threads": torch.get_num_threads(),
        "seconds_off": times["off"],
        "seconds_on": times["on"],
        "cpu_seconds_off": cpu["off"],
        "cpu_seconds_on": cpu["on"],
        "added_wall_%": 100 * (on - off) / off,
        "added_cpu_%": 100 * (min(cpu["on"]) - min(cpu["off"])) / min(cpu["off"]),
        "stabilizer_share_of_wall_%": 100 * min(inside),
        "stabilizer_ms_per_frame": 1000 * min(inside) * on / len(frames),
    }


def print_table(title: str, table: dict) -> None:
    print(f"\n{title}")
    cols = [
        "warping_error",
        "cdc",
        "psnr",
        "ssim",
        "colorfulness",
        "we_reduction_%",
        "cdc_reduction_%",
        "psnr_change_db",
    ]
    print(f"{'setting':<18}" + "".join(f"{c:>16}" for c in cols))
    for label, row in table.items():
        cells = "".join(f"{row[c]:>16.6g}" if c in row else f"{'':>16}" for c in cols)
        print(f"{label:<18}{cells}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--source", nargs="+", choices=["model", "random", "proxy", "proxy-flip"], default=None
    )
    ap.add_argument("--model", default=None, help="registered name (default: the default model)")
    ap.add_argument("--weights", default=None, help="a weights file for --source model")
    ap.add_argument("--data", type=Path, default=SHARED, help="folder with video/ and photos/")
    ap.add_argument("--max-frames", type=int, default=None, help="frames per DAVIS clip")
    ap.add_argument("--pans", type=int, default=4, help="number of synthetic pans")
    ap.add_argument("--pan-frames", type=int, default=40)
    ap.add_argument(
        "--strengths",
        type=float,
        nargs="*",
        default=[0.7, 0.8, 0.9],
        help="strengths swept besides off and the default (none: only those two)",
    )
    ap.add_argument(
        "--render-size",
        type=int,
        default=None,
        help="short side the model runs at (default: the model's own)",
    )
    ap.add_argument("--cost-frames", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the cost run")
    ap.add_argument("--cost-fusion", choices=["mixture", "product"], default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["quality", "two-shot", "cost"])
    ap.add_argument("--quick", action="store_true", help="20 frames a clip, 2 pans, 2 settings")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    if args.quick:
        args.max_frames, args.pans, args.cost_frames, args.repeats = 20, 2, 48, 2
    trained = args.weights is not None or (
        get_spec(args.model or "default").shipped is not None
        and (
            Path(engine.__file__).parents[1] / "weights" / get_spec(args.model or "default").shipped
        ).is_file()
    )
    sources = args.source or (["model"] if trained else ["random", "proxy", "proxy-flip"])
    if not (args.data / "video").is_dir():
        print(f"no test clips under {args.data / 'video'}", file=sys.stderr)
        return 2
    clips = load_clips(args.data / "video", args.max_frames)
    pans = load_pans(args.data / "photos" / "kodak24", args.pans, args.pan_frames)
    report: dict = {
        "flow_method": FLOW_METHOD,
        "size": f"{SIZE[0]}x{SIZE[1]}",
        "clips": {k: len(v) for k, v in clips.items()},
        "pans": {k: len(v) for k, v in pans.items()},
        "sources": {},
    }
    print(f"metrics flow: {FLOW_METHOD}; sequences at {SIZE[0]}x{SIZE[1]}")
    with tempfile.TemporaryDirectory(prefix="bttf-temporal-") as tmp:
        work = Path(tmp)
        for source in sources:
            entry = report["sources"].setdefault(source, {})
            if "quality" not in args.skip:
                res_clips = measure_quality(source, clips, args, work)
                res_pans = measure_quality(source, pans, args, work)
                entry["clips"] = summarize(res_clips, list(clips))
                entry["pans"] = summarize(res_pans, list(pans))
                entry["per_sequence"] = {**res_clips, **{f"{k}": v for k, v in res_pans.items()}}
                print_table(f"[{source}] DAVIS clips ({len(clips)})", entry["clips"])
                print_table(f"[{source}] synthetic pans ({len(pans)})", entry["pans"])
            if "two-shot" not in args.skip:
                entry["two_shot"] = two_shot_check(source, clips, args, work)
                print(f"\n[{source}] two-shot clip: {entry['two_shot']}")
        if "cost" not in args.skip:
            report["cost"] = cost(args, work, clips)
            print(f"\ncost at 360p on the CPU: {report['cost']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
