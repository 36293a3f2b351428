"""10-bit sources keep 10-bit output (#21): the output's luma is the source's own at full depth,
in the source's chroma subsampling where the encoder takes it, HDR colour tags kept; 8-bit
sources are unchanged (yuv420p)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import make_video

import bttf
from bttf.pipeline import ColorizeConfig
from bttf.pipeline.encode import output_pix_fmt

FAST = {"render_size": 32, "batch_size": 4, "preset": "ultrafast", "device": "cpu", "threads": 1}
BT2020, PQ = 9, 16  # AVColorPrimaries / AVColorTransferCharacteristic (matrix BT.2020 NCL: 9)


def ten_bit_clip(path: Path, pix_fmt: str, frames: int = 4) -> list[np.ndarray]:
    """An ffv1 film of random 10-bit luma (not multiples of 4: an 8-bit trip would show),
    tagged HDR10 (BT.2020, PQ); returns its Y planes."""
    rng = np.random.default_rng(1)
    ys = [rng.integers(64, 941, (48, 64), dtype=np.uint16) for _ in range(frames)]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, pix_fmt
        cc = vs.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = BT2020, PQ, 9, 1
        for i, y in enumerate(ys):
            f = av.VideoFrame(64, 48, pix_fmt)
            for k, p in enumerate(f.planes):
                a = np.frombuffer(p, "<u2").reshape(p.height, p.line_size // 2)
                a[:, : p.width] = y if k == 0 else 512
            f.pts, f.time_base = i, Fraction(1, 24)
            f.color_primaries, f.color_trc, f.colorspace, f.color_range = BT2020, PQ, 9, 1
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    return ys


def luma_of(path: Path) -> tuple[str, list[np.ndarray], av.codec.context.CodecContext]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        cc = c.streams.video[0].codec_context
        ys = []
        for f in frames:
            p = f.planes[0]
            a = np.frombuffer(p, "<u2").reshape(p.height, p.line_size // 2)
            ys.append(a[:, : p.width].copy())
        return frames[0].format.name, ys, (cc.color_primaries, cc.color_trc, cc.colorspace)


@pytest.mark.parametrize("source", ["yuv420p10le", "yuv422p10le"])
def test_a_10_bit_film_keeps_its_own_10_bit_luma(tmp_path: Path, source: str) -> None:
    """It came out 8-bit 4:2:0: the luma lost its two low bits. (ffv1: lossless, so the
    comparison sees the pipeline, not the encoder.)"""
    src = tmp_path / "in.mkv"
    ys = ten_bit_clip(src, source)
    stats = bttf.colorize_video(src, tmp_path / "out.mkv", ColorizeConfig(**FAST, codec="ffv1"))
    fmt, out_ys, tags = luma_of(stats.output)
    assert fmt == source
    assert all(np.array_equal(a, b) for a, b in zip(ys, out_ys, strict=True))
    assert tags == (BT2020, PQ, 9)


@pytest.mark.parametrize(("source", "suffix"), [("yuv420p10le", ".mp4"), ("yuv422p10le", ".mov")])
def test_a_10_bit_film_through_x264_is_10_bit(tmp_path: Path, source: str, suffix: str) -> None:
    """The default encoder too: 10 bits in the source's subsampling (ProRes 4:2:2 -> 4:2:2);
    at --crf 0 the luma is the source's exactly (x264's CRF 0 moved it by up to 2 levels at
    10 bits: QP 0 is its lossless mode there)."""
    src = tmp_path / "in.mkv"
    ys = ten_bit_clip(src, source)
    stats = bttf.colorize_video(src, tmp_path / f"out{suffix}", ColorizeConfig(**FAST, crf=0))
    fmt, out_ys, tags = luma_of(stats.output)
    assert fmt == source and tags == (BT2020, PQ, 9)
    assert all(np.array_equal(a, b) for a, b in zip(ys, out_ys, strict=True))


@pytest.mark.parametrize("source", ["yuv420p", "yuv420p10le"])
def test_x265_at_crf_0_keeps_the_luma_exactly(tmp_path: Path, source: str) -> None:
    """x265 at CRF 0 moved Y by up to 2 (8-bit) or 8 (10-bit) levels: it is lossless only
    with lossless=1."""
    src = tmp_path / "in.mkv"
    if source == "yuv420p":
        make_video(src, frames=3, codec="ffv1", audio=None)
        with av.open(str(src)) as c:
            ys = [np.array(f.to_ndarray(format="gray")) for f in c.decode(video=0)]
    else:
        ys = ten_bit_clip(src, source, frames=3)
    config = ColorizeConfig(**FAST, codec="libx265", crf=0)
    stats = bttf.colorize_video(src, tmp_path / "out.mkv", config)
    with av.open(str(stats.output)) as c:
        if source == "yuv420p":
            out_ys = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
        else:
            out_ys = luma_of(stats.output)[1]
    assert all(np.array_equal(a, b) for a, b in zip(ys, out_ys, strict=True))


def test_an_8_bit_film_is_unchanged_and_prores_gets_a_format_it_takes(tmp_path: Path) -> None:
    src = make_video(tmp_path / "in.mp4", frames=3, audio=None)
    stats = bttf.colorize_video(src, tmp_path / "out.mp4", ColorizeConfig(**FAST))
    with av.open(str(stats.output)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    # ProRes takes no yuv420p: the default refused it ("the encoder prores_ks refuses …")
    stats = bttf.colorize_video(
        src, tmp_path / "out.mov", ColorizeConfig(**FAST, codec="prores_ks")
    )
    with av.open(str(stats.output)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv422p10le"


def test_output_pix_fmt_by_source_and_encoder() -> None:
    assert output_pix_fmt("libx264", 8, "yuv422p") == "yuv420p"
    assert output_pix_fmt("libx265", 10, "yuv420p10le") == "yuv420p10le"
    assert output_pix_fmt("prores_ks", 10, "yuv420p10le") == "yuv422p10le"
    assert output_pix_fmt("libvpx-vp9", 10, "yuv420p10le") == "yuv420p"  # this libvpx: 8-bit only
    assert output_pix_fmt("libsvtav1", 12, "yuv444p12le") == "yuv420p10le"


MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_hdr10_static_metadata_is_kept(tmp_path: Path, codec: str) -> None:
    """A 10-bit HEVC HDR10 film: its mastering display and content light level (which TVs
    and players tone-map by) were dropped; primaries, transfer and matrix were kept."""
    from bttf.pipeline.decode import probe_video

    params = f"log-level=error:master-display={MASTERING}:max-cll=1000,400"
    src = tmp_path / "hdr.mp4"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx265", rate=24, options={"x265-params": params})
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p10le"
        cc = vs.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace = BT2020, PQ, 9
        for i in range(3):
            f = av.VideoFrame(64, 48, "yuv420p10le")
            for k, p in enumerate(f.planes):
                np.frombuffer(p, "<u2")[:] = 300 + 50 * i if k == 0 else 512
            f.pts, f.time_base = i, Fraction(1, 24)
            f.color_primaries, f.color_trc, f.colorspace = BT2020, PQ, 9
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    source = probe_video(src)
    assert (source.mastering_display, source.content_light) == (MASTERING, "1000,400")
    stats = bttf.colorize_video(src, tmp_path / "out.mp4", ColorizeConfig(**FAST, codec=codec))
    out = probe_video(stats.output)
    assert (out.mastering_display, out.content_light) == (MASTERING, "1000,400")
    assert (out.bits, out.color_primaries, out.color_trc) == (10, BT2020, PQ)
