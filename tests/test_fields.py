"""Interlaced films coloured field by field (#21 item 5): split, colorize, weave.

The clips are synthetic interlaced x264 films whose two fields hold different pictures (what
fast motion between fields looks like); the colorizer's a* follows lightness, so a field's
colour shows which picture the model saw for it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

import bttf
from bttf.models import Colorizer, ModelSpec
from bttf.pipeline import ColorizeConfig
from bttf.pipeline.fields import FieldChroma, field_rows

FAST = {"render_size": 32, "batch_size": 4, "preset": "ultrafast", "device": "cpu", "threads": 1}
BRIGHT, DARK = 190, 50
TFF, BFF = ("tff=1", 2), ("bff=1", 3)


class LightToRed(nn.Module):
    """a* = (L - 50) / 2, b* = 0: light pictures come out red, dark ones green."""

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return torch.cat([(L - 50.0) / 2.0, torch.zeros_like(L)], dim=1)


SPEC = ModelSpec(name="light-to-red", factory=LightToRed, output="ab", stride=8, render_size=32)


def light_to_red() -> Colorizer:
    return Colorizer(LightToRed(), SPEC).eval()


class Recorder:
    """A stabilizer that changes nothing and notes where the bright bar is (as a fraction of
    the width) in every picture it sees."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def plan(self, small, out_hw):
        return None

    def __call__(self, small, out, output, plan=None, **decoding):
        for s in small:
            cols = s.mean(axis=0)
            self.seen.append(round(4 * int(np.argmax(cols > cols.mean())) / len(cols)) / 4)
        return out

    def reset(self) -> None:
        self.seen.clear()

    def close(self) -> None:
        pass


def field_pictures(i: int, height: int, top_first: bool) -> np.ndarray:
    """Frame `i` of a film where a bright bar crosses the picture 16 pixels a field: each field
    holds the bar at its own place (in the first field shown at 32 * i, in the second 16
    further); the rest is DARK."""
    y = np.full((height, 64), DARK, np.uint8)
    first, second = (slice(0, None, 2), slice(1, None, 2))[:: 1 if top_first else -1]
    for rows, x in ((first, (32 * i) % 64), (second, (32 * i + 16) % 64)):
        y[rows, x : x + 16] = BRIGHT
    return y


def interlaced_clip(
    path: Path, x264_field: str, *, frames: int = 6, height: int = 48, crf: int = 10
) -> Path:
    """An interlaced film of `field_pictures` in the field order `x264_field`."""
    options = {"flags": "+ildct+ilme", "x264-params": x264_field, "preset": "ultrafast"}
    options["crf"] = str(crf)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25, options=options)
        vs.width, vs.height, vs.pix_fmt = 64, height, "yuv420p"
        vs.time_base = vs.codec_context.time_base = Fraction(1, 25)
        for i in range(frames):
            out.mux(vs.encode(gray_frame(field_pictures(i, height, x264_field == TFF[0]), i)))
        out.mux(vs.encode(None))
    return path


def gray_frame(y: np.ndarray, pts: int) -> av.VideoFrame:
    """A yuv420p frame of luma `y` (uint8 (h, w)) and neutral chroma at 1/25 s a frame."""
    frame = av.VideoFrame(y.shape[1], y.shape[0], "yuv420p")
    for k, p in enumerate(frame.planes):
        a = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)
        a[:, : p.width] = y if k == 0 else 128
    frame.pts, frame.time_base = pts, Fraction(1, 25)
    return frame


def plane(p) -> np.ndarray:
    a = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)
    return a[:, : p.width].copy()


def cr_planes(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [plane(f.planes[2]) for f in c.decode(video=0)]


def bars_follow_their_fields(path: Path, top_first: bool) -> bool:
    """Whether in every frame each field's chroma rows are red where that field's bar is and
    dark (green) where the other field's bar is."""

    def cr_of(cr, rows, x):  # the mean Cr of the bar at x in `rows` (chroma: half the width)
        return float(cr[rows, x // 2 : x // 2 + 8].mean())

    for i, cr in enumerate(cr_planes(path)):
        first, second = field_rows(cr.shape[0], top_first)
        x1, x2 = (32 * i) % 64, (32 * i + 16) % 64
        if not (cr_of(cr, first, x1) > 136 and cr_of(cr, first, x2) < 120):
            return False
        if not (cr_of(cr, second, x2) > 136 and cr_of(cr, second, x1) < 120):
            return False
    return True


@pytest.mark.parametrize(("x264_field", "field_order"), [TFF, BFF])
def test_each_field_gets_its_own_colour(tmp_path: Path, x264_field: str, field_order: int) -> None:
    """Coloured as whole frames, a bar that moves between the fields got one colour smeared
    over both of its places; by fields, each field's bar is red where that field shows it."""
    src = interlaced_clip(tmp_path / "in.mp4", x264_field)
    top_first = x264_field == TFF[0]
    split = bttf.colorize_video(
        src, tmp_path / "split.mp4", ColorizeConfig(**FAST), colorizer=light_to_red()
    )
    with av.open(str(split.output)) as c:
        assert c.streams.video[0].codec_context.field_order == field_order
    assert bars_follow_their_fields(split.output, top_first)
    whole = bttf.colorize_video(
        src, tmp_path / "whole.mp4", ColorizeConfig(**FAST, fields=False), colorizer=light_to_red()
    )
    assert not bars_follow_their_fields(whole.output, top_first)


@pytest.mark.parametrize("x264_field", [TFF[0], BFF[0]])
def test_the_stabilizer_sees_the_fields_in_the_order_shown(tmp_path: Path, x264_field: str) -> None:
    """The bar moves a quarter of the width a field: in the order shown, steadily."""
    src = interlaced_clip(tmp_path / "in.mp4", x264_field, frames=4)
    recorder = Recorder()
    config = ColorizeConfig(**FAST)
    bttf.colorize_video(
        src, tmp_path / "out.mp4", config, colorizer=light_to_red(), stabilizer=recorder
    )
    assert recorder.seen == [0.0, 0.25, 0.5, 0.75] * 2  # 4 frames, 2 fields each


def test_fields_are_woven_back_into_their_rows() -> None:
    class Planes:  # a chroma stage whose planes say which field they are
        closed = False

        def __call__(self, fields, ab):
            cb = np.stack([np.full((3, 4), k, np.uint8) for k in range(len(fields))])
            return cb, cb

        def close(self) -> None:
            self.closed = True

    planes = Planes()
    stage = FieldChroma(planes, 5, top_first=False)
    woven, _ = stage([_Prepared(), _Prepared()], torch.zeros(4, 2, 3, 4))
    stage.close()  # the engine closes its chroma stage (a keyframe guide's decoders)
    assert planes.closed
    # frame 0: fields 0 (first: bottom, rows 1 and 3) and 1 (top: rows 0, 2, 4)
    assert woven[0][:, 0].tolist() == [1, 0, 1, 0, 1]
    assert woven[1][:, 0].tolist() == [3, 2, 3, 2, 3]
    assert field_rows(5, True) == (slice(0, 5, 2), slice(1, 5, 2))


class _Prepared:
    frame = None
    small = np.zeros((2, 8, 8), np.uint8)
    chroma = np.zeros((2, 3, 4), np.uint8)


def decoded(path: Path) -> list[tuple[np.ndarray, ...]]:
    with av.open(str(path)) as c:
        return [tuple(plane(p) for p in f.planes) for f in c.decode(video=0)]


def test_an_interrupted_run_by_fields_resumes_to_the_same_film(tmp_path: Path) -> None:
    """Segments restart the stabilizer on the fields before them, as a run in one go has it."""
    src = interlaced_clip(tmp_path / "in.mp4", TFF[0], frames=12)
    config = ColorizeConfig(**{**FAST, "batch_size": 2}, crf=0, segment_frames=4)
    whole = bttf.colorize_video(src, tmp_path / "whole.mp4", config, colorizer=light_to_red())
    assert whole.segments == 3

    def stop_after_six(done: int, total: int | None) -> None:
        if done >= 6:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.mp4"
    with pytest.raises(KeyboardInterrupt):
        bttf.colorize_video(src, out, config, stop_after_six, colorizer=light_to_red())
    resumed = bttf.colorize_video(
        src, out, ColorizeConfig(**{**config.__dict__, "resume": True}), colorizer=light_to_red()
    )
    assert resumed.resumed_frames == 4
    assert all(
        all(np.array_equal(a, b) for a, b in zip(fa, fb, strict=True))
        for fa, fb in zip(decoded(out), decoded(whole.output), strict=True)
    )
    assert bars_follow_their_fields(out, top_first=True)


def test_no_fields_on_the_command_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Field by field is the default for an interlaced film; --no-fields colours whole frames."""
    import logging

    from bttf.cli import main

    src = interlaced_clip(tmp_path / "in.mp4", BFF[0], frames=3)
    args = ["colorize", str(src), "--render-size", "32", "--device", "cpu", "-q"]
    for flag, expected in (([], True), (["--no-fields"], False)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bttf.pipeline.engine"):
            main([*args, "-o", str(tmp_path / f"out{len(flag)}.mp4"), *flag])
        said = "coloured field by field, bottom field first" in caplog.text
        assert said == expected


def test_interlaced_x264_at_a_height_not_in_fours_is_padded_by_field(tmp_path: Path) -> None:
    """x264 takes interlaced 4:2:0 only in heights of 4: a 50-row film failed when the encoder
    opened, with "the muxer refused data from the input … probably damaged"."""
    rng = np.random.default_rng(0)
    src = tmp_path / "in.mkv"
    ys = [rng.integers(16, 236, (50, 64), dtype=np.uint8) for _ in range(3)]
    with av.open(str(src), "w") as out:
        vs = out.add_stream("ffv1", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 50, "yuv420p"
        vs.codec_context.field_order = 2  # tt
        for i, y in enumerate(ys):
            out.mux(vs.encode(gray_frame(y, i)))
        out.mux(vs.encode(None))
    stats = bttf.colorize_video(src, tmp_path / "out.mp4", ColorizeConfig(**FAST, crf=0))
    assert stats.size == (64, 52)
    with av.open(str(stats.output)) as c:
        assert c.streams.video[0].codec_context.field_order == 2
        out_ys = [plane(f.planes[0]) for f in c.decode(video=0)]
    for y, out_y in zip(ys, out_ys, strict=True):
        assert np.array_equal(out_y[:50], y)  # the film's own luma, every row
        assert np.array_equal(out_y[50:], y[[48, 47]])  # each padded row from its own field


def test_dv_is_interlaced_bottom_field_first(tmp_path: Path) -> None:
    """DV's decoder flags its frames interlaced but names no field order: such a film came out
    progressive, coloured as whole frames. DV is bottom field first (NTSC and PAL alike)."""
    src = tmp_path / "dv.avi"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("dvvideo", rate=Fraction(30000, 1001))
        vs.width, vs.height, vs.pix_fmt = 720, 480, "yuv411p"
        for i in range(3):
            frame = av.VideoFrame(720, 480, "yuv411p")
            for k, p in enumerate(frame.planes):
                np.frombuffer(p, np.uint8)[:] = 60 + 40 * i if k == 0 else 128
            frame.pts, frame.time_base = i, Fraction(1001, 30000)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.field_order == 0  # what the decoder says
    recorder = Recorder()
    config = ColorizeConfig(**FAST)
    stats = bttf.colorize_video(
        src, tmp_path / "out.mp4", config, colorizer=light_to_red(), stabilizer=recorder
    )
    assert stats.frames == 3 and len(recorder.seen) == 6  # by fields
    with av.open(str(stats.output)) as c:
        assert c.streams.video[0].codec_context.field_order == 3  # bb


def test_fields_option_must_be_a_bool_or_none() -> None:
    from bttf.errors import BadInputError
    from bttf.pipeline import ColorizeConfig

    with pytest.raises(BadInputError, match="fields must be True, False or None"):
        ColorizeConfig(fields="no")  # (truthy: it would have turned fields on)
