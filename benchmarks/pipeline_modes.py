"""The modes of the pipeline benchmarks, each run in a fresh interpreter of its own so that
its peak memory (ru_maxrss) is its own:

  (a) transcode   PyAV decode + encode with the engine's codec settings, no model: the limit
  (b) model       Colorizer.predict + decode on random L at render size, batched
  (c) naive       one frame at a time, no threads: decode -> RGB -> Lab -> model -> Lab -> RGB
                  -> encode (how the older tools work)
  (d) bttf        bttf.colorize_video with temporal stabilization (`bttf`), and without
                  (`bttf-notemporal`)

    python benchmarks/pipeline_modes.py --worker MODE --clip CLIP --tmp DIR [options]

prints one JSON line: frames, seconds, fps, CPU ms a frame, page faults, peak MiB. Every run is
preceded by a short warm-up in the same process (first 16 frames), so one-off costs (oneDNN
kernel choice, lazy imports) are not counted; model loading is. `--variant` puts the engine
back the way it was before one of its speed changes (`VARIANTS`, for `pipeline_levers.py`).
The experiments call it through `pipeline_common.spawn`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from pathlib import Path

from pipeline_common import RATE, WARMUP_FRAMES, add_options

# The engine's defaults (ColorizeConfig): what (a) and (c) encode with too. PRESET and RENDER
# (None: the model's render size) follow --preset and --render-size in every mode.
CODEC, CRF, PRESET, PIX_FMT = "libx264", 18, "medium", "yuv420p"
RENDER: int | None = None
OVERLAP = True  # colour and chroma stages on threads of their own (`--variant stages-inline`: off)


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


def encode_options(preset: str | None = None) -> dict[str, str]:
    """The options the engine gives the encoder (x264 held to AVX2 on an AVX-512 CPU …) at
    `preset` (default: this process's --preset)."""
    from bttf.pipeline.encode import EncodeSettings

    return EncodeSettings(codec=CODEC, crf=CRF, preset=preset or PRESET, pix_fmt=PIX_FMT).options()


def run_transcode(clip: Path, out: Path, frames: int | None) -> dict:
    """(a) PyAV decode + encode of the same frames, same codec settings, no model."""
    import av

    n = 0
    with av.open(str(clip)) as inp, av.open(str(out), "w") as dst:
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"  # as the engine's decoder
        s = dst.add_stream(CODEC, rate=vs.average_rate, options=encode_options())
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


def colorizer_for(model: str | None):
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
    colorizer = colorizer_for(model).to(dev)
    n = 0
    with av.open(str(clip)) as inp, av.open(str(out), "w") as dst, torch.inference_mode():
        vs = inp.streams.video[0]
        s = dst.add_stream(CODEC, rate=vs.average_rate, options=encode_options())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument(
        "--worker", required=True, help="transcode, model, naive, bttf, bttf-notemporal"
    )
    parser.add_argument("--clip", required=True)
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--variant", help="comma-separated names of VARIANTS")
    parser.add_argument("--render-hw", help="HxW the model runs at in (b)")
    parser.add_argument("--no-warmup", action="store_true")
    worker(parser.parse_args())


if __name__ == "__main__":
    main()
