"""The streaming engine: what a colorized film keeps from its source, and how runs fail."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from conftest import make_video, stray_threads
from torch import nn

import bttf
from bttf.errors import BadInputError, BttfError, OutputExistsError
from bttf.files import atomic_output
from bttf.models import Colorizer, ModelSpec
from bttf.pipeline import ColorizeConfig, engine
from bttf.pipeline.decode import SPACE_BT709, SPACE_SMPTE170M, probe_video
from bttf.pipeline.encode import convert_depth
from bttf.pipeline.media import Consumer, Producer
from bttf.pipeline.stages import chroma_planes, gray_lut, render_dims

FAST = {"render_size": 32, "batch_size": 4, "preset": "ultrafast", "device": "cpu", "threads": 1}


# --- helpers ---------------------------------------------------------------------------------


@dataclass
class Film:
    planes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # Y, Cb, Cr per frame
    times: list[Fraction]  # seconds
    durations: list[Fraction]
    time_base: Fraction
    rate: Fraction | None
    duration: Fraction | None  # the video stream's, seconds
    size: tuple[int, int]
    pix_fmt: str
    color_range: int
    colorspace: int
    rotation: int
    audio: list[tuple[str, Fraction | None, list[bytes]]]  # codec, duration (s), packets


def _plane(p: av.video.plane.VideoPlane, dtype=np.uint8) -> np.ndarray:
    a = np.frombuffer(p, dtype=dtype)
    return a.reshape(p.height, p.line_size // a.itemsize)[:, : p.width].copy()


def read_film(path: Path) -> Film:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        planes, times, durs, first = [], [], [], None
        for f in c.decode(v):
            first = first or f
            dtype = np.uint8 if "10" not in f.format.name else np.dtype("<u2")
            planes.append(tuple(_plane(p, dtype) for p in f.planes[:3]))
            times.append(f.pts * f.time_base)
            durs.append(f.duration * f.time_base)
        film = Film(
            planes=planes,
            times=times,
            durations=durs,
            time_base=v.time_base,
            rate=v.average_rate,
            duration=v.duration * v.time_base if v.duration else None,
            size=(first.width, first.height),
            pix_fmt=first.format.name,
            color_range=first.color_range,
            colorspace=first.colorspace,
            rotation=first.rotation,
            audio=[
                (a.codec_context.name, a.duration * a.time_base if a.duration else None, [])
                for a in c.streams.audio
            ],
        )
    with av.open(str(path)) as c:  # afresh: every audio packet from the start
        for p in c.demux(*c.streams.audio) if c.streams.audio else ():
            if p.size:
                film.audio[p.stream.index - c.streams.audio[0].index][2].append(bytes(p))
    return film


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class ConstAB(nn.Module):
    """A stand-in colorizer: the same (a, b) everywhere, at a quarter of the input size."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.register_buffer("ab", torch.tensor([a, b], dtype=torch.float32).view(1, 2, 1, 1))
        self.inputs: list[tuple[int, ...]] = []

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        self.inputs.append(tuple(L.shape))
        n, _, h, w = L.shape
        return self.ab.expand(n, 2, h // 4, w // 4) + 0 * L[:, :1, ::4, ::4]


CONST_SPEC = ModelSpec(name="const", factory=ConstAB, output="ab", stride=8, render_size=32)


@pytest.fixture
def const_model(monkeypatch: pytest.MonkeyPatch):
    """Install a ConstAB colorizer in the engine; returns a function (a, b) -> the module."""

    def install(a: float = 20.0, b: float = 40.0) -> ConstAB:
        model = ConstAB(a, b)
        colorizer = Colorizer(model, CONST_SPEC).eval()
        monkeypatch.setattr(engine, "build_colorizer", lambda config, device: colorizer)
        return model

    return install


def no_partials(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".partial-" in p.name]


# --- what the output keeps -------------------------------------------------------------------


def test_keeps_frames_timing_audio_and_luma(tiny_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    stats = bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST))
    src, dst = read_film(tiny_video), read_film(out)
    assert stats.frames == len(dst.planes) == len(src.planes) == 24
    assert dst.times == src.times and dst.durations == src.durations
    assert dst.rate == src.rate == 24 and dst.duration == src.duration
    assert dst.size == src.size and dst.pix_fmt == "yuv420p"
    # The audio is copied packet for packet.
    assert [(c, d) for c, d, _ in dst.audio] == [(c, d) for c, d, _ in src.audio]
    assert dst.audio[0][2] == src.audio[0][2]
    # Luma: the source's Y went to the encoder untouched (PSNR only measures crf 18's loss).
    assert min(psnr(a[0], b[0]) for a, b in zip(src.planes, dst.planes)) >= 40.0
    assert no_partials(tmp_path)


def test_luma_is_bit_exact_when_lossless(tiny_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "lossless.mp4"
    bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST, crf=0))
    src, dst = read_film(tiny_video), read_film(out)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(src.planes, dst.planes))


def test_chroma_comes_from_the_model(tiny_video: Path, tmp_path: Path, const_model) -> None:
    const_model(20.0, 40.0)  # orange: more red, less blue
    out = tmp_path / "orange.mp4"
    bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST, crf=0, temporal=False))
    film = read_film(out)
    cb = np.stack([p[1] for p in film.planes]).astype(float)
    cr = np.stack([p[2] for p in film.planes]).astype(float)
    assert cb.mean() < 118 and cr.mean() > 138  # planes in the right order, right signs
    assert film.colorspace == SPACE_SMPTE170M and film.color_range == 1  # SD: BT.601, limited


def test_neutral_ab_gives_exactly_neutral_chroma(
    tiny_video: Path, tmp_path: Path, const_model
) -> None:
    const_model(0.0, 0.0)
    out = tmp_path / "gray.mp4"
    bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST, crf=0, temporal=False))
    film = read_film(out)
    assert all((p[1] == 128).all() and (p[2] == 128).all() for p in film.planes)


def test_default_model_colours_vary(tiny_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "default.mp4"
    bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST))
    film = read_film(out)
    chroma = np.stack([np.stack(p[1:]) for p in film.planes])
    assert chroma.std() > 0.5  # not a constant 128


def test_variable_frame_rate_timestamps(vfr_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "vfr_out.mp4"
    bttf.colorize_video(vfr_video, out, ColorizeConfig(**FAST))
    src, dst = read_film(vfr_video), read_film(out)
    assert len(set(np.diff([float(t) for t in src.times]).round(4))) > 3  # really VFR
    assert dst.times == src.times and dst.duration == src.duration
    assert dst.audio[0][2] == src.audio[0][2]


def test_start_and_duration(tiny_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut.mp4"
    stats = bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST, start=0.25, duration=0.5))
    src, dst = read_film(tiny_video), read_film(out)
    assert stats.frames == len(dst.planes) == 12
    assert dst.times[0] == 0 and dst.times == [t - Fraction(1, 4) for t in src.times[6:18]]
    assert dst.planes[0][0].shape == src.planes[6][0].shape
    assert psnr(dst.planes[0][0], src.planes[6][0]) >= 40.0  # frame 6 is the first one
    audio_s = float(dst.audio[0][1])
    assert abs(audio_s - 0.5) <= 0.05  # cut to the window, to a packet (21 ms)


def test_start_past_the_end_is_bad_input(tiny_video: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="past the end"):
        bttf.colorize_video(tiny_video, tmp_path / "x.mp4", ColorizeConfig(**FAST, start=5.0))
    assert not (tmp_path / "x.mp4").exists() and no_partials(tmp_path)


def test_odd_size_is_padded_for_h264(odd_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    stats = bttf.colorize_video(odd_video, out, ColorizeConfig(**FAST, crf=0))
    src, dst = read_film(odd_video), read_film(out)
    assert stats.size == dst.size == (66, 50) and len(dst.planes) == 12
    assert all(np.array_equal(b[0][:49, :65], a[0]) for a, b in zip(src.planes, dst.planes))


def test_odd_size_is_kept_when_the_codec_can(odd_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "odd.mkv"
    config = ColorizeConfig(**{**FAST, "codec": "ffv1", "crf": None, "preset": None})
    bttf.colorize_video(odd_video, out, config)
    src, dst = read_film(odd_video), read_film(out)
    assert dst.size == (65, 49)
    assert dst.planes[0][1].shape == (25, 33)  # ceil chroma sizes
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(src.planes, dst.planes))


def test_rotation_kept_and_model_sees_the_picture_upright(tmp_path: Path, const_model) -> None:
    src = make_video(tmp_path / "rot.mp4", frames=6, rotation=90, audio=None)
    model = const_model()
    out = tmp_path / "rot_out.mp4"
    bttf.colorize_video(src, out, ColorizeConfig(**FAST, temporal=False))
    assert read_film(out).rotation == 90
    assert all(h > w for _, _, h, w in model.inputs)  # coded 64×48 landscape, shown portrait


def test_full_range_source_stays_full_range(tmp_path: Path) -> None:
    src = make_video(tmp_path / "full.mkv", frames=6, codec="ffv1", pix_fmt="gray", audio=None)
    out = tmp_path / "full_out.mkv"
    bttf.colorize_video(src, out, ColorizeConfig(**FAST, codec="ffv1"))
    s, d = read_film(src), read_film(out)
    assert d.color_range == 2
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(s.planes, d.planes))


def test_ten_bit_source(tmp_path: Path) -> None:
    src = make_video(
        tmp_path / "ten.mkv", frames=6, codec="ffv1", pix_fmt="yuv420p10le", audio=None
    )
    s = read_film(src)
    out8, out10 = tmp_path / "eight.mkv", tmp_path / "ten_out.mkv"
    bttf.colorize_video(src, out8, ColorizeConfig(**FAST, codec="ffv1", pix_fmt="yuv420p"))
    bttf.colorize_video(src, out10, ColorizeConfig(**FAST, codec="ffv1"))  # the source's depth
    d8, d10 = read_film(out8), read_film(out10)
    assert np.array_equal(d8.planes[2][0], convert_depth(s.planes[2][0], 10, 8))
    assert np.array_equal(d10.planes[2][0], s.planes[2][0])


def test_rgb_source_gets_a_computed_luma(tmp_path: Path) -> None:
    src = make_video(tmp_path / "rgb.mov", frames=6, codec="png", pix_fmt="rgb24", audio=None)
    out = tmp_path / "rgb_out.mp4"
    bttf.colorize_video(src, out, ColorizeConfig(**FAST, crf=0))
    with av.open(str(src)) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.float64)
    y = 16 + (rgb @ [0.299, 0.587, 0.114]) * 219 / 255  # BT.601, limited range
    film = read_film(out)
    assert film.color_range == 1 and film.colorspace == SPACE_SMPTE170M
    assert np.abs(film.planes[0][0] - np.rint(y)).max() <= 1


def test_audio_the_container_cannot_hold_is_reencoded(tmp_path: Path) -> None:
    src = make_video(tmp_path / "u8.mkv", frames=12, audio="pcm_u8", audio_rate=8000)
    out = tmp_path / "u8.mp4"
    stats = bttf.colorize_video(src, out, ColorizeConfig(**FAST))
    film = read_film(out)
    assert film.audio[0][0] == "aac" and abs(float(film.audio[0][1]) - 0.5) < 0.1
    assert any("re-encoded to aac" in n for n in stats.notices)


def test_no_audio_option(tiny_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "mute.mp4"
    bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST, audio=False))
    assert read_film(out).audio == []


# --- failures leave nothing behind -----------------------------------------------------------


def test_existing_output_is_refused_and_untouched(tiny_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST))
    assert out.read_bytes() == b"precious"
    bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST, overwrite=True))
    assert len(read_film(out).planes) == 24


def test_output_cannot_be_the_input(tmp_path: Path) -> None:
    src = make_video(tmp_path / "same.mp4", frames=4, audio=None)
    before = src.read_bytes()
    with pytest.raises(BadInputError, match="INPUT itself"):
        bttf.colorize_video(
            src, tmp_path / "." / "same.mp4", ColorizeConfig(**FAST, overwrite=True)
        )
    assert src.read_bytes() == before


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_mid_way_leaves_no_output(
    tiny_video: Path, tmp_path: Path, const_model, error: BaseException
) -> None:
    model = const_model()
    calls = []

    def failing(L: torch.Tensor) -> torch.Tensor:
        calls.append(L.shape[0])
        if len(calls) == 3:
            raise error
        return ConstAB.forward(model, L)

    model.forward = failing
    out = tmp_path / "fail.mp4"
    with pytest.raises(type(error)):
        bttf.colorize_video(tiny_video, out, ColorizeConfig(**FAST, temporal=False))
    assert not out.exists() and no_partials(tmp_path)
    assert stray_threads() == []


def test_out_of_memory_halves_the_batch(tiny_video: Path, tmp_path: Path, const_model) -> None:
    model = const_model()
    seen = []

    def picky(L: torch.Tensor) -> torch.Tensor:
        seen.append(L.shape[0])
        if L.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return ConstAB.forward(model, L)

    model.forward = picky
    out = tmp_path / "oom.mp4"
    stats = bttf.colorize_video(tiny_video, out, ColorizeConfig(**{**FAST, "batch_size": 8}))
    assert stats.batch_size == 2 and seen[:3] == [8, 4, 2]
    assert len(read_film(out).planes) == 24  # every frame, all coloured


def test_out_of_memory_at_one_frame_fails_cleanly(
    tiny_video: Path, tmp_path: Path, const_model
) -> None:
    model = const_model()

    def oom(L: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    model.forward = oom
    with pytest.raises(BttfError, match="render-size"):
        bttf.colorize_video(tiny_video, tmp_path / "o.mp4", ColorizeConfig(**FAST))
    assert no_partials(tmp_path) and not (tmp_path / "o.mp4").exists()


def test_bad_inputs(tmp_path: Path, audio_only: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a film\n")
    with pytest.raises(BadInputError, match="does not exist"):
        bttf.colorize_video(tmp_path / "missing.mp4", tmp_path / "o.mp4")
    with pytest.raises(BadInputError, match="not a video or image PyAV can read"):
        bttf.colorize_video(text, tmp_path / "o.mp4")
    with pytest.raises(BadInputError, match="audio-only"):
        bttf.colorize_video(audio_only, tmp_path / "o.mp4")


# --- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix,tolerance", [(".png", 0.6), (".jpg", 2.5), (".tif", 0.6)])
def test_image_keeps_lightness(
    gray_png: Path, tmp_path: Path, const_model, suffix: str, tolerance: float
) -> None:
    from bttf.color import luma_to_l, rgb_to_lab

    const_model(15.0, 30.0)
    src = tmp_path / f"in{suffix}"
    cv2.imwrite(str(src), cv2.imread(str(gray_png), cv2.IMREAD_GRAYSCALE))
    out = tmp_path / f"out{suffix}"
    stats = bttf.colorize_image(src, out, ColorizeConfig(render_size=32, device="cpu"))
    rgb = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    gray = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
    assert stats.frames == 1 and rgb.shape[:2] == gray.shape
    lab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
    assert np.abs(lab[0].numpy() - luma_to_l(gray)).mean() < tolerance
    assert lab[1].mean() > 8 and lab[2].mean() > 15  # coloured as the model said


def test_sixteen_bit_image_stays_sixteen_bit(tmp_path: Path) -> None:
    src = tmp_path / "deep.png"
    cv2.imwrite(str(src), (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16))
    out = tmp_path / "deep_out.png"
    bttf.colorize_image(src, out, ColorizeConfig(render_size=32, device="cpu"))
    img = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (48, 64, 3)


def test_image_to_video_suffix_is_refused(gray_png: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="image suffix"):
        bttf.colorize_image(gray_png, tmp_path / "x.mp4")
    with pytest.raises(BadInputError, match="not an image"):
        (tmp_path / "bad.png").write_text("nope")
        bttf.colorize_image(tmp_path / "bad.png", tmp_path / "x.png")


# --- building blocks -------------------------------------------------------------------------


def test_render_dims_and_luts() -> None:
    assert render_dims(320, 480, 256, 16) == (256, 384)
    assert render_dims(480, 320, 256, 16) == (384, 256)
    assert render_dims(49, 65, 32, 8) == (32, 40)
    lut = gray_lut(8, full_range=False)
    assert lut[16] == 0 and lut[235] == 255 and lut[0] == 0 and lut[255] == 255
    assert np.array_equal(gray_lut(8, full_range=True), np.arange(256))
    assert gray_lut(10, full_range=False)[64] == 0 and gray_lut(10, full_range=False)[940] == 255


def test_chroma_planes_against_known_colours() -> None:
    from bttf.color import rgb_to_lab

    rgb = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 1, 3)
    lab = rgb_to_lab(rgb)
    cb, cr = chroma_planes(lab[:, :1], lab[:, 1:], SPACE_BT709, full_range=False, bits=8)
    # BT.709 limited range: red (Cb 102, Cr 240), blue (240, 118), gray (128, 128).
    assert np.abs(cb[0, 0].numpy().astype(int) - [102, 240, 128]).max() <= 1
    assert np.abs(cr[0, 0].numpy().astype(int) - [240, 118, 128]).max() <= 1


def test_probe(tiny_video: Path) -> None:
    info = probe_video(tiny_video)
    assert (info.width, info.height, info.frames, info.rate) == (64, 48, 24, 24)
    assert info.n_audio == 1 and not info.full_range and info.bits == 8


def test_producer_passes_items_and_errors() -> None:
    assert list(Producer(range(50), maxsize=2)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("decoder broke")

    with pytest.raises(ValueError, match="decoder broke"):
        list(Producer(broken(), maxsize=2))


def test_producer_close_stops_an_endless_source() -> None:
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    p = Producer(endless(), maxsize=2, name="endless")
    it = iter(p)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    p.close()
    assert not p.is_alive()


def test_consumer_raises_the_threads_error() -> None:
    got = []

    def handle(x: int) -> None:
        if x == 3:
            raise OSError("disk full")
        got.append(x)

    c = Consumer(handle, maxsize=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            c.put(i)
        c.finish()
    c.abort()
    assert got == [0, 1, 2]


def test_atomic_output(tmp_path: Path) -> None:
    dst = tmp_path / "a.txt"
    with atomic_output(dst) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt"
        tmp.write_text("done")
    assert dst.read_text() == "done"
    with pytest.raises(RuntimeError), atomic_output(dst) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert dst.read_text() == "done" and no_partials(tmp_path)


def test_written_files_get_the_usual_mode(tmp_path: Path) -> None:
    """safetensors makes its files 0o600; bttf's weights, checkpoints and converted copies are
    readable as any file the user writes (0o666 less the umask)."""
    import os

    from bttf.models import create_model
    from bttf.models.weights import save_weights

    model = create_model("mean-chroma")
    old = os.umask(0o027)
    try:
        save_weights(tmp_path / "w.safetensors", model, "mean-chroma", {})
        with atomic_output(tmp_path / "c.safetensors") as tmp:
            save_weights(tmp, model, "mean-chroma", {})
            os.chmod(tmp, 0o600)
    finally:
        os.umask(old)
    for name in ("w.safetensors", "c.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640
