"""The output file: reproducible, quiet encoders, the codec the suffix asks for, and every
stream of the source (audio, subtitles, attachments, chapters) carried where the container
allows it. Tiny media made here with PyAV."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import make_video

FAST = {"render_size": 32, "batch_size": 4, "preset": "ultrafast", "device": "cpu", "threads": 1}


def _colorize_in_a_process(src: Path, out: Path, perturb: int) -> None:
    """`bttf colorize` with default settings in a fresh interpreter whose malloc fills new
    memory with `perturb` (glibc's MALLOC_PERTURB_): code that reads uninitialised memory
    then gives other output."""
    env = {**os.environ, "MALLOC_PERTURB_": str(perturb), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bttf", "colorize", str(src), "-o", str(out), "-q"]
    subprocess.run(cmd, env=env, check=True, timeout=300)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_identical_runs_give_identical_files(tmp_path: Path, suffix: str) -> None:
    """Default settings (libx264 CRF 18 medium): x264's AVX-512 code read uninitialised memory
    and Matroska wrote random UIDs, so two runs differed."""
    src = make_video(tmp_path / "in.mp4")
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    _colorize_in_a_process(src, a, 0)
    _colorize_in_a_process(src, b, 165)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("codec", ["libx265", "libsvtav1"])
def test_encoder_libraries_are_quiet_unless_verbose(tmp_path: Path, codec: str) -> None:
    """x265 printed 46 lines of banner under --quiet; SVT-AV1 its own too."""
    import av

    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - not in this PyAV build
        pytest.skip(f"no {codec} in this PyAV")
    src = make_video(tmp_path / "in.mp4", frames=8, audio=None)
    env = {k: v for k, v in os.environ.items() if k != "SVT_LOG"}
    env["OMP_NUM_THREADS"] = "1"
    fast = [
        "--render-size",
        "32",
        "--crf",
        "30",
        "--preset",
        "8" if codec == "libsvtav1" else "fast",
    ]
    for verbose in ([], ["-v"]):
        out = tmp_path / f"out{len(verbose)}.mp4"
        cmd = [sys.executable, "-m", "bttf", *verbose, "colorize", str(src), "-o", str(out)]
        cmd += ["-q", "--codec", codec, *fast]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert p.returncode == 0, p.stderr
        said = p.stderr.lower()
        if verbose:
            assert "x265 [info]" in said or "svt[info]" in said
        else:
            assert p.stderr == ""


# --- the output suffix picks the codec (#21 item 8) --------------------------------------------


def _streams(path: Path) -> list[tuple[str, str | None]]:
    import av

    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else None) for s in c.streams]


def test_webm_suffix_picks_vp9_and_opus(tmp_path: Path) -> None:
    import bttf
    from bttf.pipeline import ColorizeConfig

    src = make_video(tmp_path / "in.mp4", frames=6)  # AAC audio
    stats = bttf.colorize_video(src, tmp_path / "out.webm", ColorizeConfig(**FAST))
    assert _streams(stats.output) == [("video", "vp9"), ("audio", "opus")]
    assert any("re-encoded to" in n and "opus" in n for n in stats.notices)


def test_gif_suffix_points_to_bttf_gif(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bttf.cli import main

    src = make_video(tmp_path / "in.mp4", frames=4, audio=None)
    with pytest.raises(SystemExit) as exc:
        main(["colorize", str(src), "-o", str(tmp_path / "out.gif"), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "bttf gif" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_unknown_suffix_names_the_users_output(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from bttf.cli import main

    src = make_video(tmp_path / "in.mp4", frames=4, audio=None)
    with pytest.raises(SystemExit) as exc:
        main(["colorize", str(src), "-o", str(tmp_path / "out.xyz"), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"cannot write {tmp_path / 'out.xyz'} (" in err and "partial" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# --- audio by container: PCM (#21 items 2, 3) -------------------------------------------------


def _with_pcm(dst: Path, tmp_path: Path) -> Path:
    """A film with 1 s of stereo PCM (s16le) in `dst`'s container (Matroska: "2 channels",
    no named layout, which FFmpeg's MP4 muxer refuses when it writes the trailer)."""
    import av
    import numpy as np

    video = make_video(tmp_path / f"v-{dst.stem}.mp4", frames=12, audio=None)
    with av.open(str(video)) as inp, av.open(str(dst), "w") as out:
        v = out.add_stream_from_template(inp.streams.video[0])
        a = out.add_stream("pcm_s16le", rate=48000)
        a.layout = "stereo"
        for p in inp.demux(inp.streams.video[0]):
            if p.size:
                p.stream = v
                out.mux(p)
        for s in range(0, 24000, 1200):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 2400), np.int16), "s16", "stereo")
            f.sample_rate, f.pts = 48000, s
            out.mux(a.encode(f))
        out.mux(a.encode(None))
    return dst


@pytest.mark.parametrize(
    ("src_suffix", "out_suffix", "audio"),
    [
        (".mkv", ".mp4", "aac"),  # refused before ("the input is probably damaged")
        (".mov", ".mp4", "aac"),  # was copied as ipcm, which players do not play
        (".mkv", ".mov", "pcm_s16le"),
        (".mkv", ".mkv", "pcm_s16le"),
    ],
)
def test_pcm_audio_by_container(
    tmp_path: Path, src_suffix: str, out_suffix: str, audio: str
) -> None:
    import bttf
    from bttf.pipeline import ColorizeConfig

    src = _with_pcm(tmp_path / f"in{src_suffix}", tmp_path)
    stats = bttf.colorize_video(src, tmp_path / f"out{out_suffix}", ColorizeConfig(**FAST))
    assert _streams(stats.output) == [("video", "h264"), ("audio", audio)]
    if audio == "aac":
        assert any("MP4 players do not play PCM" in n for n in stats.notices)


# --- subtitles, attachments, chapters, tags (#21 item 4) ---------------------------------------


def _with_subtitles(dst: Path, tmp_path: Path, codec: str = "subrip") -> Path:
    """A film with an English AAC track, a French subtitle track (two cues), a font attachment
    (Matroska only) and two chapters."""
    import av

    text = {"subrip": [b"Hello <i>there</i>", b"Second line"], "mov_text": [b"\x00\x05Hello"]}
    base = make_video(tmp_path / f"base-{dst.stem}.mp4")
    with av.open(str(base)) as inp, av.open(str(dst), "w") as out:
        vi, ai = inp.streams.video[0], inp.streams.audio[0]
        v, a = out.add_stream_from_template(vi), out.add_stream_from_template(ai)
        a.metadata["language"] = "eng"
        s = out.add_mux_stream(codec)
        s.metadata.update(language="fra", title="French")
        if dst.suffix == ".mkv":
            out.add_attachment("font.ttf", "application/x-truetype-font", b"\x00\x01font")
        ms = Fraction(1, 1000)
        out.set_chapters(
            [
                {"id": 1, "start": 0, "end": 500, "time_base": ms, "metadata": {"title": "One"}},
                {"id": 2, "start": 500, "end": 1000, "time_base": ms, "metadata": {"title": "Two"}},
            ]
        )
        for p in inp.demux(vi, ai):
            if p.size:
                p.stream = v if p.stream.type == "video" else a
                out.mux(p)
        for i, data in enumerate(text[codec]):
            p = av.Packet(data)
            p.stream, p.time_base = s, ms
            p.pts = p.dts = 500 * i
            p.duration = 400
            out.mux(p)
    return dst


def _contents(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        subs = c.streams.subtitles
        return {
            "streams": [
                (s.type, s.codec_context.name if s.codec_context else None) for s in c.streams
            ],
            "sub_tags": dict(subs[0].metadata) if subs else {},
            "audio_lang": c.streams.audio[0].metadata.get("language") if c.streams.audio else None,
            "cues": sum(1 for p in c.demux(subs[0]) if p.size > 2) if subs else 0,
            "chapters": [ch["metadata"].get("title") for ch in c.chapters()],
            "attachments": [
                s.metadata.get("filename") for s in c.streams if s.type == "attachment"
            ],
        }


@pytest.mark.parametrize("segments", [0, 8])  # one file; closed segments joined at the end
def test_mkv_to_mkv_keeps_subtitles_attachments_chapters_tags(tmp_path: Path, segments) -> None:
    import bttf
    from bttf.pipeline import ColorizeConfig

    src = _with_subtitles(tmp_path / "in.mkv", tmp_path)
    config = ColorizeConfig(**FAST, segment_frames=segments)
    stats = bttf.colorize_video(src, tmp_path / "out.mkv", config)
    got = _contents(stats.output)
    assert got["streams"][:3] == [("video", "h264"), ("audio", "aac"), ("subtitle", "srt")]
    assert got["sub_tags"]["language"] == "fra" and got["sub_tags"]["title"] == "French"
    assert got["audio_lang"] == "eng" and got["cues"] == 2
    assert got["chapters"] == ["One", "Two"] and got["attachments"] == ["font.ttf"]
    assert not stats.notices


def test_mkv_to_mp4_converts_text_subtitles_and_names_what_it_drops(tmp_path: Path) -> None:
    import bttf
    from bttf.pipeline import ColorizeConfig

    src = _with_subtitles(tmp_path / "in.mkv", tmp_path)
    stats = bttf.colorize_video(src, tmp_path / "out.mp4", ColorizeConfig(**FAST))
    got = _contents(stats.output)
    assert ("subtitle", "mov_text") in got["streams"]
    assert got["sub_tags"]["language"] == "fra" and got["cues"] == 2
    assert got["chapters"] == ["One", "Two"]
    assert any("converted to mov_text" in n for n in stats.notices)
    assert any("attachment font.ttf dropped" in n for n in stats.notices)


def test_mp4_to_mp4_copies_mov_text_and_chapters(tmp_path: Path) -> None:
    import bttf
    from bttf.pipeline import ColorizeConfig

    src = _with_subtitles(tmp_path / "in.mp4", tmp_path, codec="mov_text")
    stats = bttf.colorize_video(src, tmp_path / "out.mp4", ColorizeConfig(**FAST))
    got = _contents(stats.output)
    assert ("subtitle", "mov_text") in got["streams"] and got["cues"] == 1
    assert got["chapters"] == ["One", "Two"]
    assert not stats.notices  # the chapter track is no "data stream not carried"


def test_start_and_duration_cut_the_chapters(tmp_path: Path) -> None:
    import bttf
    from bttf.pipeline import ColorizeConfig

    src = _with_subtitles(tmp_path / "in.mkv", tmp_path)
    config = ColorizeConfig(**FAST, start=0.6, duration=0.3)
    got = _contents(bttf.colorize_video(src, tmp_path / "out.mkv", config).output)
    assert got["chapters"] == ["Two"]


def test_timecode_track_is_carried_without_a_dropped_notice(tmp_path: Path) -> None:
    import av

    import bttf
    from bttf.pipeline import ColorizeConfig

    src = tmp_path / "tc.mov"
    base = make_video(tmp_path / "base.mp4", frames=6, audio=None)
    with av.open(str(base)) as inp, av.open(str(src), "w") as out:
        v = out.add_stream_from_template(inp.streams.video[0])
        v.metadata["timecode"] = "01:00:00:00"  # the muxer writes a tmcd track from it
        for p in inp.demux(inp.streams.video[0]):
            if p.size:
                p.stream = v
                out.mux(p)
    stats = bttf.colorize_video(src, tmp_path / "out.mov", ColorizeConfig(**FAST))
    with av.open(str(stats.output)) as c:
        assert c.streams.video[0].metadata.get("timecode") == "01:00:00:00"
        assert [s.type for s in c.streams] == ["video", "data"]
    assert not stats.notices


def test_a_packet_the_muxer_refuses_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An MKV whose AAC audio has two packets at the same time (Matroska takes that; MP4's
    muxer refuses it): one line naming the container, the stream, its codec and the time, and
    the way out; nothing written. The advice works: the same film into .mkv."""
    import av

    from bttf.cli import main

    made = make_video(tmp_path / "made.mkv", frames=24, audio="aac")
    src = tmp_path / "in.mkv"
    with av.open(str(made)) as inp, av.open(str(src), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        n, last = 0, None
        for p in inp.demux():
            if not p.size:
                continue
            if p.stream.type == "audio":
                n += 1
                if n == 10:  # the 10th audio packet at the 9th's time
                    p.pts, p.dts = last
                last = p.pts, p.dts
            p.stream = streams[p.stream.index]
            out.mux(p)
    args = ["colorize", str(src), "--render-size", "32", "--device", "cpu", "-q"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "-o", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "the mp4 muxer refused the aac audio of stream #1 at 0.149 s" in err
    assert "--no-audio" in err and "write .mkv" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "made.mkv"]
    main([*args, "-o", str(tmp_path / "out.mkv")])
    assert (tmp_path / "out.mkv").is_file()


# --- interlaced input (#21 item 5, the encoding half) -----------------------------------------


@pytest.mark.parametrize(("x264_field", "field_order"), [("tff=1", 2), ("bff=1", 3)])
def test_interlaced_film_stays_interlaced_in_its_field_order(
    tmp_path: Path, x264_field: str, field_order: int
) -> None:
    """It became "progressive" output with interlaced luma: players then showed combing."""
    import av

    import bttf
    from bttf.pipeline import ColorizeConfig

    options = {"flags": "+ildct+ilme", "x264-params": x264_field, "preset": "ultrafast"}
    src = make_video(tmp_path / "in.mp4", frames=8, fps=25, audio=None, options=options)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.field_order == field_order
    stats = bttf.colorize_video(src, tmp_path / "out.mp4", ColorizeConfig(**FAST))
    with av.open(str(stats.output)) as c:
        assert c.streams.video[0].codec_context.field_order == field_order
        assert all(f.interlaced_frame for f in c.decode(video=0))


def test_a_film_still_being_written_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An MP4 copied or recorded half-way has no index yet: the error said only "not a video"."""
    from bttf.cli import main

    full = make_video(tmp_path / "full.mp4", frames=48)
    growing = tmp_path / "growing.mp4"
    growing.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(SystemExit) as exc:
        main(["colorize", str(growing), "-o", str(tmp_path / "out.mp4"), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "still being written" in err
    os.utime(growing, (0, 0))  # an old file: no guess about writing
    with pytest.raises(SystemExit):
        main(["colorize", str(growing), "-o", str(tmp_path / "out.mp4"), "-q"])
    assert "still being written" not in capsys.readouterr().err
