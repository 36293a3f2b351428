"""How fast `bttf colorize` runs, against the limits set by its own parts.

On one generated clip (a moving, textured, grainy gray film with one cut, h264 in a temp dir),
each in its own subprocess so that peak memory (ru_maxrss) is its own:

  (a) transcode   PyAV decode + encode with the engine's codec settings, no model: the limit
  (b) model       Colorizer.predict + decode on random L at render size, batched
  (c) naive       one frame at a time, no threads: decode -> RGB -> Lab -> model -> Lab -> RGB
                  -> encode (how the older tools work)
  (d) bttf        bttf.colorize_video with temporal stabilization (the default), and without

and prints frames/s, d/a, d/c, d against the serial bound 1/(1/a + 1/b), and peak memory.
Every run is preceded by a short warm-up in the same process (first 16 frames), so one-off
costs (oneDNN kernel choice, lazy imports) are not counted; model loading is.

    python benchmarks/pipeline.py                          # cpu, 360p, default model
    python benchmarks/pipeline.py --size 720p --frames 120 --json
    python benchmarks/pipeline.py --memory                 # (d) peak memory, 100 vs 1000 frames
    python benchmarks/pipeline.py --levers                 # what each design choice is worth
    python benchmarks/pipeline.py --asm-ab 5 --frames 120    # (a): x264 held to AVX2 vs its own pick
    python benchmarks/pipeline.py --preset veryfast --render-size 160   # a faster setting
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

SIZES = {"360p": (640, 360), "480p": (640, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
RATE = 24
WARMUP_FRAMES = 16
# The engine's defaults (ColorizeConfig): what (a) and (c) encode with too. PRESET and RENDER
# (None: the model's render size) follow --preset and --render-size in every mode.
CODEC, CRF, PRESET, PIX_FMT = "libx264", 18, "medium", "yuv420p"
RENDER: int | None = None
OVERLAP = True  # colour and chroma stages on threads of their own (`--variant stages-inline`: off)


# ---------------------------------------------------------------------------------------------
# The test clip


def _periodic_texture(h: int, w: int, rng: np.random.Generator, beta: float) -> np.ndarray:
    """Noise with a 1/f^beta spectrum, periodic in both axes (so it can pan forever), in [0, 1]."""
    spec = np.fft.rfft2(rng.standard_normal((h, w)))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    t = np.fft.irfft2(spec / f**beta, s=(h, w))
    t -= t.min()
    return t / t.max()


def make_clip(path: Path, width: int, height: int, frames: int, seed: int = 0) -> None:
    """Write a gray h264 film: two shots of panning textured scenery with a moving disc,
    vignetting, flicker and grain (like old film); yuv420p with flat chroma, 24 fps."""
    import av
    import cv2

    rng = np.random.default_rng(seed)
    shots = []
    for beta in (1.4, 1.8):
        tex = _periodic_texture(height, width, rng, beta)
        shots.append((40 + 180 * tex).astype(np.float32))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    vignette = 1.0 - 0.35 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
    r = height / 8
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=RATE, options={"crf": "18", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.time_base = Fraction(1, 12800)
        for i in range(frames):
            base = shots[0] if i < frames // 2 else shots[1]
            dy, dx = (i * 1) % height, (i * 3) % width  # pan right and down
            img = np.roll(base, (-dy, -dx), axis=(0, 1))
            cx = (0.2 + 0.6 * ((i * 5) % width) / width) * width
            cy = height / 2 + height / 5 * math.sin(i / 12)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            img = np.where(disc, 235.0 - 0.3 * img, img)
            img = img * vignette * (1.0 + 0.02 * math.sin(i * 1.7))  # flicker
            grain = rng.normal(0, 0.8, (height // 2, width // 2)).astype(np.float32)
            img += cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)  # grain
            y = np.clip(16 + img * (219 / 255), 16, 235).astype(np.uint8)
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, value in zip(frame.planes, (y, 128, 128)):
                dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                dst[:, : plane.width] = value
            frame.pts = i * (12800 // RATE)
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


# ---------------------------------------------------------------------------------------------
# The modes (each runs in its own subprocess: `--worker MODE`)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds this process used so far, all its threads (FFmpeg's and torch's included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _page_faults() -> int:
    """Minor page faults so far: each is a fresh page of memory touched for the first time."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _set_torch_threads(n: int | None) -> int:
    import torch

    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _encode_options() -> dict[str, str]:
    """The options the engine gives the encoder (x264 held to AVX2 on an AVX-512 CPU …)."""
    from bttf.pipeline.encode import EncodeSettings

    return EncodeSettings(codec=CODEC, crf=CRF, preset=PRESET, pix_fmt=PIX_FMT).options()


def run_transcode(clip: Path, out: Path, frames: int | None) -> dict:
    """(a) PyAV decode + encode of the same frames, same codec settings, no model."""
    import av

    n = 0
    with av.open(str(clip)) as inp, av.open(str(out), "w") as dst:
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"  # as the engine's decoder
        s = dst.add_stream(CODEC, rate=vs.average_rate, options=_encode_options())
        s.width, s.height, s.pix_fmt = vs.width, vs.height, PIX_FMT
        s.time_base = vs.time_base
        for f in inp.decode(vs):
            if frames is not None and n >= frames:
                break
            f.pict_type = av.video.frame.PictureType.NONE
            for p in s.encode(f):
                dst.mux(p)
            n += 1
        for p in s.encode(None):
            dst.mux(p)
    return {"frames": n}


def _render_hw(clip: Path, model: str | None) -> tuple[int, int]:
    from bttf.models import get_spec
    from bttf.pipeline.decode import probe_video
    from bttf.pipeline.stages import render_dims

    info = probe_video(clip)
    spec = get_spec(model or "default")
    return render_dims(info.height, info.width, RENDER or spec.render_size, spec.stride)


def _colorizer(model: str | None):
    import logging

    from bttf.models import Colorizer

    logging.getLogger("bttf.models").setLevel(logging.ERROR)  # no "random weights" warning
    return Colorizer.create(name=model).eval()


def run_model(
    clip: Path,
    model: str | None,
    device: str,
    frames: int,
    batch: int,
    render_hw: tuple[int, int] | None = None,
) -> dict:
    """(b) predict + decode on random L of render size, `batch` frames a call, run the way the
    engine runs it (its model build, memory layout and autocast: `ModelStage.predict`)."""
    import torch

    from bttf.pipeline import engine
    from bttf.pipeline.stages import ModelStage
    from bttf.runtime import resolve_device

    rh, rw = render_hw or _render_hw(clip, model)
    dev = resolve_device(device)
    colorizer = engine.build_colorizer(engine.ColorizeConfig(model=model, device=device), dev)
    stage = ModelStage(colorizer, dev, batch)
    L = torch.rand(batch, 1, rh, rw, generator=torch.Generator().manual_seed(0)).to(dev) * 100
    calls = max(1, math.ceil(frames / batch))

    def step() -> None:
        colorizer.decode(stage.predict(L), (rh, rw))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with torch.inference_mode():
        step()
        step()
        t0 = time.perf_counter()
        for _ in range(calls):
            step()
        dt = time.perf_counter() - t0
    return {
        "frames": calls * batch,
        "seconds_timed": dt,
        "render_hw": [rh, rw],
        "batch": batch,
        "autocast": str(stage.amp).replace("torch.", "") if stage.amp else "float32",
    }


def run_naive(
    clip: Path, out: Path, model: str | None, frames: int | None, device: str = "cpu"
) -> dict:
    """(c) decode one frame, RGB -> Lab, model at render size, Lab -> RGB at full size, encode;
    batch 1, everything on one Python thread (FFmpeg's own codec threads as PyAV sets them);
    the colour conversions and the model on `device`, float32, no autocast."""
    import av
    import torch
    import torch.nn.functional as F

    from bttf.color import lab_to_rgb, rgb_to_lab

    rh, rw = _render_hw(clip, model)
    dev = torch.device(device)
    colorizer = _colorizer(model).to(dev)
    n = 0
    with av.open(str(clip)) as inp, av.open(str(out), "w") as dst, torch.inference_mode():
        vs = inp.streams.video[0]
        s = dst.add_stream(CODEC, rate=vs.average_rate, options=_encode_options())
        s.width, s.height, s.pix_fmt = vs.width, vs.height, PIX_FMT
        s.time_base = vs.time_base
        for f in inp.decode(vs):
            if frames is not None and n >= frames:
                break
            rgb = torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].to(dev)
            lab = rgb_to_lab(rgb.float() / 255.0)
            L = lab[:, :1]
            small = F.interpolate(L, size=(rh, rw), mode="area")
            ab = colorizer.decode(colorizer.predict(small), L.shape[-2:])
            rgb_out = lab_to_rgb(torch.cat([L, ab], dim=1))[0]
            arr = (rgb_out * 255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu()
            frame = av.VideoFrame.from_ndarray(arr.numpy(), format="rgb24")
            frame.pts, frame.time_base = f.pts, f.time_base
            for p in s.encode(frame):  # PyAV converts rgb24 -> yuv420p (swscale)
                dst.mux(p)
            n += 1
        for p in s.encode(None):
            dst.mux(p)
    return {"frames": n, "render_hw": [rh, rw]}


class _InlineProducer:
    """The engine's Producer without its thread (for the threads lever)."""

    def __init__(self, source, *, maxsize: int = 8, name: str = "producer"):
        self._source = source
        self.busy_s = 0.0

    def __iter__(self):
        it = iter(self._source)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                self.busy_s += time.perf_counter() - t0
            yield item

    def close(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


class _InlineConsumer:
    """The engine's Consumer without its thread (for the threads lever)."""

    def __init__(self, handle, *, on_finish=None, maxsize: int = 8, name: str = "consumer"):
        self._handle, self._on_finish = handle, on_finish
        self.busy_s = 0.0

    def put(self, item) -> None:
        t0 = time.perf_counter()
        self._handle(item)
        self.busy_s += time.perf_counter() - t0

    def finish(self) -> None:
        t0 = time.perf_counter()
        if self._on_finish is not None:
            self._on_finish()
        self.busy_s += time.perf_counter() - t0

    def abort(self) -> None:
        pass


def run_bttf(
    clip: Path,
    out: Path,
    model: str | None,
    device: str,
    temporal: bool,
    batch: int,
    threads: int | None,
    duration: float | None,
) -> dict:
    """(d) bttf.colorize_video, the engine behind `bttf colorize`."""
    import logging

    from bttf.pipeline import engine

    logging.getLogger("bttf.models").setLevel(logging.ERROR)
    cfg = engine.ColorizeConfig(
        model=model,
        device=device,
        temporal=temporal,
        batch_size=batch,
        threads=threads,
        overwrite=True,
        duration=duration,
        preset=PRESET,
        render_size=RENDER,
    )
    st = engine.colorize_video(clip, out, cfg, overlap=OVERLAP)
    return {
        "frames": st.frames,
        "stats_seconds": st.seconds,
        "decode_s": st.decode_s,
        "model_s": st.model_s,
        "stabilize_s": st.stabilize_s,
        "encode_s": st.encode_s,
        "render_hw": list(st.render_size),
        "batch": st.batch_size,
    }


#: The engine as it was before each speed change, for the levers table (`--variant`).
VARIANTS = {
    "fp32": "float32 model (no bf16 autocast on CPU)",
    "nchw": "NCHW model (no channels_last on CPU)",
    "inline-io": "decode + encode on the model's thread",
    "stages-inline": "colour (stabilizer, annealed mean) and chroma stages on the model's thread",
    "cv2-serial": "OpenCV without its own worker threads (cv2.setNumThreads(1))",
    "compile": "torch.compile'd model (inductor; needs a C++ compiler on the CPU)",
    "x264-asm-auto": "x264 with the CPU code it picks itself (AVX-512: runs differ)",
}


def apply_variants(variants: list[str]) -> None:
    """Put the engine back the way it was before the changes named in `variants`."""
    import torch

    from bttf import runtime
    from bttf.pipeline import engine
    from bttf.pipeline.stages import ModelStage

    global OVERLAP

    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v}; choose from {', '.join(VARIANTS)}")
    if "fp32" in variants:
        runtime.cpu_autocast_dtype = lambda: None
    if "nchw" in variants:
        build = engine.build_colorizer

        def build_nchw(config, device):
            return build(config, device).to(memory_format=torch.contiguous_format)

        def predict_nchw(self, L):
            if self.amp is not None:
                with torch.autocast(self.device.type, dtype=self.amp):
                    return self.colorizer.predict(L).float().contiguous()
            return self.colorizer.predict(L).float().contiguous()

        engine.build_colorizer = build_nchw
        ModelStage.predict = predict_nchw
    if "stages-inline" in variants:
        OVERLAP = False
    if "cv2-serial" in variants:
        import cv2

        cv2.setNumThreads(1)
    if "compile" in variants:  # an option we measured and did not adopt (benchmarks/README.md)
        build_plain = engine.build_colorizer
        built: dict = {}  # the warm-up compiles; the timed run reuses the compiled model

        def build_compiled(config, device):
            key = (config.model, str(device))
            if key not in built:
                built[key] = build_plain(config, device)
                built[key].model = torch.compile(built[key].model, dynamic=False)
            return built[key]

        engine.build_colorizer = build_compiled
    if "x264-asm-auto" in variants:
        from bttf.pipeline.encode import EncodeSettings

        held = EncodeSettings.options

        def options_auto(self) -> dict[str, str]:
            opts = held(self)
            opts.pop("x264-params", None)
            return opts

        EncodeSettings.options = options_auto  # type: ignore[method-assign]
    if "inline-io" in variants:
        engine.Producer = _InlineProducer  # type: ignore[misc,assignment]
        engine.Consumer = _InlineConsumer  # type: ignore[misc,assignment]


def worker(args: argparse.Namespace) -> None:
    """Run one mode (after a warm-up) and print one JSON line: frames, seconds, fps, peak MiB."""
    global PRESET, RENDER
    PRESET, RENDER = args.preset, args.render_size
    clip = Path(args.clip)
    out = Path(args.tmp) / f"out-{args.worker}-{os.getpid()}.mp4"
    warm_out = Path(args.tmp) / f"warm-{args.worker}-{os.getpid()}.mp4"
    threads = _set_torch_threads(args.threads) if args.worker in ("model", "naive") else None
    warm_s = WARMUP_FRAMES / RATE
    mode = args.worker
    variants = [v for v in (args.variant or "").split(",") if v]
    apply_variants(variants)
    if mode == "transcode":

        def go(w: bool) -> dict:
            return run_transcode(clip, warm_out if w else out, WARMUP_FRAMES if w else None)
    elif mode == "model":
        hw = tuple(int(v) for v in args.render_hw.split("x")) if args.render_hw else None

        def go(w: bool) -> dict:
            return run_model(
                clip, args.model, args.device, WARMUP_FRAMES if w else args.frames, args.batch, hw
            )
    elif mode == "naive":

        def go(w: bool) -> dict:
            return run_naive(
                clip, warm_out if w else out, args.model, WARMUP_FRAMES if w else None, args.device
            )
    elif mode in ("bttf", "bttf-notemporal"):

        def go(w: bool) -> dict:
            return run_bttf(
                clip,
                warm_out if w else out,
                args.model,
                args.device,
                mode == "bttf",
                args.batch,
                args.threads,
                warm_s if w else None,
            )
    else:
        raise SystemExit(f"unknown worker mode {mode}")
    if not args.no_warmup:
        go(True)
    cpu0, faults0 = _cpu_s(), _page_faults()
    t0 = time.perf_counter()
    res = go(False)
    cpu, faults = _cpu_s() - cpu0, _page_faults() - faults0
    seconds = res.pop("seconds_timed", None) or (time.perf_counter() - t0)
    res.update(
        mode=mode,
        seconds=round(seconds, 3),
        fps=round(res["frames"] / seconds, 2),
        cpu_ms_per_frame=round(1000 * cpu / res["frames"], 2),
        page_faults_per_frame=round(faults / res["frames"]),
        peak_mib=round(_maxrss_mib(), 1),
    )
    if threads is not None:
        res["torch_threads"] = threads
    if variants:
        res["variant"] = variants
    print(json.dumps(res))


# ---------------------------------------------------------------------------------------------
# The driver


def spawn(mode: str, clip: Path, tmp: Path, args: argparse.Namespace, **extra) -> dict:
    """Run `--worker mode` in a fresh interpreter; its last stdout line is the result."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        mode,
        "--clip",
        str(clip),
        "--tmp",
        str(tmp),
        "--device",
        args.device,
        "--frames",
        str(args.frames),
        "--batch",
        str(extra.get("batch", args.batch)),
        "--preset",
        args.preset,
    ]
    if args.render_size:
        cmd += ["--render-size", str(args.render_size)]
    if args.model:
        cmd += ["--model", args.model]
    threads = extra.get("threads", args.threads)
    if threads:
        cmd += ["--threads", str(threads)]
    if extra.get("variant"):
        cmd += ["--variant", extra["variant"]]
    if extra.get("render_hw"):
        cmd += ["--render-hw", extra["render_hw"]]
    if extra.get("no_warmup"):
        cmd.append("--no-warmup")
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"worker {mode} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def conditions() -> dict:
    """The machine and how busy it was (timings on a loaded machine are not comparable)."""
    import av
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    training = subprocess.run(
        ["pgrep", "-f", "bttf train"], capture_output=True, text=True, check=False
    )
    return {
        "cpu": cpu,
        "cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "other_training_running": bool(training.stdout.strip()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyav": av.__version__,
        "ffmpeg_libavcodec": av.library_versions.get("libavcodec"),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main_bench(args: argparse.Namespace, tmp: Path) -> dict:
    w, h = SIZES[args.size]
    clip = tmp / f"clip-{args.size}-{args.frames}.mp4"
    make_clip(clip, w, h, args.frames)
    modes = ["transcode", "model", "naive", "bttf", "bttf-notemporal"]
    res = {m: spawn(m, clip, tmp, args) for m in modes}
    a, b, c = res["transcode"]["fps"], res["model"]["fps"], res["naive"]["fps"]
    bound = 1.0 / (1.0 / a + 1.0 / b)
    ratios = {}
    for m in ("bttf", "bttf-notemporal"):
        d = res[m]["fps"]
        ratios[m] = {
            "d/a": round(d / a, 3),
            "d/c": round(d / c, 3),
            "d/serial_bound": round(d / bound, 3),
        }
    d = res["bttf"]["fps"]
    targets = {}
    if args.device == "cpu":
        targets = {
            "d >= 0.9 x serial bound": d >= 0.9 * bound,
            "d >= 1.3 x c": d >= 1.3 * c,
            "d >= 24 fps": d >= 24.0,
        }
    else:  # the colorizer hidden behind the codec; DeOldify: ~8.8 fps on an RTX 2070
        targets = {"d >= 0.8 x a": d >= 0.8 * a}
    return {
        "size": args.size,
        "frames": args.frames,
        "device": args.device,
        "model": args.model or "default",
        "batch": args.batch,
        "preset": args.preset,
        "render_size": args.render_size or "model's",
        "serial_bound_fps": round(bound, 2),
        "results": res,
        "ratios": ratios,
        "targets": targets,
    }


def asm_bench(args: argparse.Namespace, tmp: Path) -> dict:
    """(a) alternately as the engine runs it and with `x264-asm-auto`, `args.asm_ab` times each
    (alternating, so a change in the machine's load falls on both); wall-clock fps and CPU
    time per frame (the steadier of the two on a shared machine)."""
    w, h = SIZES[args.size]
    clip = tmp / f"clip-{args.size}-{args.frames}.mp4"
    make_clip(clip, w, h, args.frames)
    runs: dict[str, list[dict]] = {"engine": [], "x264-asm-auto": []}
    for _ in range(args.asm_ab):
        for name, variant in (("engine", None), ("x264-asm-auto", "x264-asm-auto")):
            r = spawn("transcode", clip, tmp, args, variant=variant)
            runs[name].append({"fps": r["fps"], "cpu_ms_per_frame": r["cpu_ms_per_frame"]})
    med = {
        k: {m: float(np.median([r[m] for r in v])) for m in ("fps", "cpu_ms_per_frame")}
        for k, v in runs.items()
    }
    e, a = med["engine"], med["x264-asm-auto"]
    return {
        "size": args.size,
        "frames": args.frames,
        "preset": args.preset,
        "encode_options": _encode_options(),
        "runs": runs,
        "median": med,
        "engine_vs_auto_fps": round(e["fps"] / a["fps"], 3),
        "engine_vs_auto_cpu": round(e["cpu_ms_per_frame"] / a["cpu_ms_per_frame"], 3),
    }


def memory_bench(args: argparse.Namespace, tmp: Path) -> dict:
    w, h = SIZES[args.size]
    out = {}
    for n in (100, 1000):
        clip = tmp / f"clip-{args.size}-{n}.mp4"
        make_clip(clip, w, h, n)
        out[n] = spawn("bttf", clip, tmp, args, no_warmup=True)
    ratio = out[1000]["peak_mib"] / out[100]["peak_mib"]
    return {
        "size": args.size,
        "device": args.device,
        "model": args.model or "default",
        "peak_mib_100": out[100]["peak_mib"],
        "peak_mib_1000": out[1000]["peak_mib"],
        "ratio": round(ratio, 4),
        "within_5pct": ratio <= 1.05,
        "runs": out,
    }


def levers_bench(args: argparse.Namespace, tmp: Path) -> dict:
    """(d) and (b) with one design choice changed at a time, and per-frame costs of the paths
    in and out of Lab. Each row: what the code does now vs the alternative."""
    w, h = SIZES[args.size]
    clip = tmp / f"clip-{args.size}-{args.frames}.mp4"
    make_clip(clip, w, h, args.frames)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    d = "bttf-notemporal"
    rows: list[tuple[str, str, str, dict]] = []  # (lever, variant, mode, extra spawn args)
    rows.append(("engine as it is", "default", d, {}))
    for v, what in VARIANTS.items():
        rows.append((what, v, d, {"variant": v}))
    rows.append(
        ("old CPU model path", "fp32,nchw,whole-decode", d, {"variant": "fp32,nchw,whole-decode"})
    )
    for t in sorted({1, cores}):
        rows.append(("torch threads", f"threads={t}", d, {"threads": t}))
    for bs in (1, 2, 4, 16):
        rows.append(("batch size", f"batch={bs}", d, {"batch": bs}))
    rows.append(("temporal on", "default", "bttf", {}))
    rows.append(("temporal on", f"threads={cores}", "bttf", {"threads": cores}))
    for t in sorted({1, cores}):
        rows.append(("model alone", f"threads={t}", "model", {"threads": t}))
    rows.append(("model alone, 1 thread", "compile", "model", {"threads": 1, "variant": "compile"}))
    # per-core efficiency of the model (one thread, as the engine runs it on 2 cores)
    one = {"threads": 1}
    rows.append(("model alone, 1 thread", "fp32", "model", {**one, "variant": "fp32"}))
    rows.append(("model alone, 1 thread", "fp32,nchw", "model", {**one, "variant": "fp32,nchw"}))
    for bs in (1, 2, 4):
        rows.append(("model alone, 1 thread", f"batch={bs}", "model", {**one, "batch": bs}))
    for rw in (320, 336, 352, 448, 464, 480):  # 336 = 16 * 21; 320, 448 = 64 * 5, 64 * 7
        variant = {**one, "render_hw": f"256x{rw}"}
        rows.append(("render size, 1 thread", f"256x{rw}", "model", variant))
    runs = []
    for lever, variant, mode, extra in rows:
        r = spawn(mode, clip, tmp, args, **extra)
        r.update(lever=lever, variant_label=variant)
        runs.append(r)
        if not args.json:
            print(
                f"{lever:42}{variant:24}{mode:16}{r['fps']:8.1f} fps{r['cpu_ms_per_frame']:8.1f}"
                f" CPU ms/frame{r['peak_mib']:7.0f} MiB",
                flush=True,
            )
    return {
        "size": args.size,
        "frames": args.frames,
        "runs": runs,
        "colour_paths_ms": colour_paths(w, h, args.model),
    }


def colour_paths(width: int, height: int, model: str | None, reps: int = 20) -> dict:
    """Per-frame cost (ms) of the two ways in and out of Lab, at this frame size, 1 frame."""
    import av
    import cv2
    import torch
    import torch.nn.functional as F

    from bttf.color import L_LUT, lab_to_rgb, rgb_to_lab
    from bttf.models import get_spec
    from bttf.pipeline.stages import chroma_planes, render_dims
    from bttf.pipeline.stages import resize_plane as _resize

    torch.set_num_threads(1)  # per-frame cost on one core
    spec = get_spec(model or "default")
    rh, rw = render_dims(height, width, spec.render_size, spec.stride)
    rng = np.random.default_rng(0)
    y = rng.integers(16, 236, (height, width), dtype=np.uint8)
    i420 = np.concatenate([y.ravel(), np.full(height * width // 2, 128, np.uint8)])
    i420 = i420.reshape(height * 3 // 2, width)
    ab_small = torch.randn(1, 2, rh // 4, rw // 4) * 20
    lut = L_LUT

    def t(fn) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return round(1000 * (time.perf_counter() - t0) / reps, 3)

    def l_lut():  # what the engine does: resize Y, then one table lookup at render size
        lut[torch.from_numpy(_resize(y, (rh, rw))).long()]

    def l_rgb():  # YUV -> RGB at full size, RGB -> Lab, take L, resize
        rgb = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
        lab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
        F.interpolate(lab[:, :1], size=(rh, rw), mode="area")

    ch, cw = (height + 1) // 2, (width + 1) // 2

    def out_planes():  # the engine: ab -> chroma plane size, Lab -> RGB -> CbCr there; Y reused
        ab = F.interpolate(ab_small, size=(ch, cw), mode="bilinear", align_corners=False)
        Lc = lut[torch.from_numpy(_resize(y, (ch, cw))).long()][None, None]
        cb, cr = chroma_planes(Lc, ab, 6, False, 8)
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, data in zip(frame.planes, (y, cb[0].numpy(), cr[0].numpy())):
            dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            dst[:, : plane.width] = data

    def out_rgb():  # full size: ab -> full, Lab -> RGB, uint8, then swscale RGB -> yuv420p
        ab = F.interpolate(ab_small, size=(height, width), mode="bilinear", align_corners=False)
        L = lut[torch.from_numpy(y).long()][None, None]
        rgb = lab_to_rgb(torch.cat([L, ab], 1))[0]
        arr = (rgb * 255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format="yuv420p")

    colorizer = _colorizer(model)
    with torch.inference_mode():
        logits = colorizer.predict(torch.rand(1, 1, rh, rw) * 100).expand(8, -1, -1, -1)
    logits = logits.contiguous()
    Lc = torch.rand(8, 1, ch, cw) * 100

    def chroma_batch():  # decode + chroma planes on the batch of 8 at once
        with torch.inference_mode():
            chroma_planes(Lc, colorizer.decode(logits, (ch, cw)), 6, False, 8)

    def chroma_frames():  # the same, frame by frame (what the engine does on CPU)
        with torch.inference_mode():
            for k in range(8):
                chroma_planes(
                    Lc[k : k + 1], colorizer.decode(logits[k : k + 1], (ch, cw)), 6, False, 8
                )

    return {
        "L_lut_render_size": t(l_lut),
        "L_via_rgb_full_size": t(l_rgb),
        "out_chroma_planes_yuv420p": t(out_planes),
        "out_via_rgb_full_size": t(out_rgb),
        "chroma_stage_per_frame": round(t(chroma_frames) / 8, 3),
        "chroma_stage_batch_of_8": round(t(chroma_batch) / 8, 3),
    }


def print_main(r: dict, cond: dict) -> None:
    res = r["results"]
    print(
        f"bttf pipeline benchmark — {r['size']}, {r['frames']} frames, model {r['model']}, "
        f"device {r['device']}, batch {r['batch']}, x264 {r['preset']}, render size "
        f"{r['render_size']}"
    )
    print(
        f"machine: {cond['cpu']}, {cond['cores']} cores; load avg {cond['load_avg']}; "
        f"other training running: {cond['other_training_running']}"
        + (f"; GPU: {cond['gpu']}" if cond.get("gpu") else "")
    )
    names = {
        "transcode": "(a) transcode only",
        "model": "(b) model alone",
        "naive": "(c) naive per-frame loop",
        "bttf": "(d) bttf colorize (temporal)",
        "bttf-notemporal": "(d) bttf colorize --no-temporal",
    }
    print(f"{'':36}{'fps':>8}{'CPU ms/frame':>14}{'peak MiB':>10}")
    for m, label in names.items():
        print(
            f"{label:36}{res[m]['fps']:>8.1f}{res[m]['cpu_ms_per_frame']:>14.1f}"
            f"{res[m]['peak_mib']:>10.0f}"
        )
    print(f"{'serial bound 1/(1/a+1/b)':36}{r['serial_bound_fps']:>8.1f}")
    for m in ("bttf", "bttf-notemporal"):
        q = r["ratios"][m]
        print(
            f"{names[m]}: d/a {q['d/a']:.2f}, d/c {q['d/c']:.2f}, "
            f"d/serial bound {q['d/serial_bound']:.2f}"
        )
    for m in ("bttf", "bttf-notemporal"):
        s = res[m]
        print(
            f"  {m} stage busy time: decode {s['decode_s']:.2f} s, model {s['model_s']:.2f} s "
            f"(stabilizer {s['stabilize_s']:.2f} s), encode {s['encode_s']:.2f} s, "
            f"wall {s['seconds']:.2f} s"
        )
    for k, ok in r["targets"].items():
        print(f"target {k}: {'met' if ok else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", default="360p", choices=sorted(SIZES))
    parser.add_argument("--model", default=None, help="registered model (default: `default`)")
    parser.add_argument("--frames", type=int, default=240, help="frames in the clip")
    parser.add_argument("--batch", type=int, default=8, help="batch size of (b) and (d)")
    parser.add_argument("--preset", default=PRESET, help="x264 preset of every mode")
    parser.add_argument(
        "--render-size",
        type=int,
        default=None,
        help="short side the model runs at (default: the model's own)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads ((b), (c): all cores; (d): the engine's default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--memory", action="store_true", help="peak memory of (d) for 100 and 1000 frames"
    )
    parser.add_argument(
        "--levers", action="store_true", help="(d) with one design choice changed at a time"
    )
    parser.add_argument(
        "--asm-ab",
        type=int,
        default=0,
        metavar="N",
        help="(a) only, N times each alternating: the engine's x264 options vs x264-asm-auto",
    )
    # internal: one mode in a subprocess
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--render-hw", help=argparse.SUPPRESS)
    parser.add_argument("--no-warmup", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
    cond_before = conditions()
    with tempfile.TemporaryDirectory(prefix="bttf-bench-") as d:
        tmp = Path(d)
        if args.asm_ab:
            r = asm_bench(args, tmp)
        elif args.memory:
            r = memory_bench(args, tmp)
        elif args.levers:
            r = levers_bench(args, tmp)
        else:
            r = main_bench(args, tmp)
    cond = conditions()
    cond["load_avg_before"] = cond_before["load_avg"]
    cond["other_training_running"] |= cond_before["other_training_running"]
    r["conditions"] = cond
    if args.json or args.asm_ab:
        print(json.dumps(r, indent=2))
    elif args.memory:
        print(
            f"peak memory of (d), {r['size']}: 100 frames {r['peak_mib_100']:.0f} MiB, "
            f"1000 frames {r['peak_mib_1000']:.0f} MiB, ratio {r['ratio']:.3f} "
            f"({'within' if r['within_5pct'] else 'NOT within'} 5%)"
        )
        print(f"conditions: {cond}")
    elif args.levers:
        print("per-frame CPU ms (one core):", r["colour_paths_ms"])
        print(f"conditions: {cond}")
    else:
        print_main(r, cond)


if __name__ == "__main__":
    main()
