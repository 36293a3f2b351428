"""Bad input, damaged frames, unwritable or full destinations, unsafe weights: every one ends in
a correct output or one line `bttf: error: …` with exit code 2 (1 for a full disk), never a
traceback, a hang, or a file at the destination. Ends with a fuzz test over mutated mp4 bytes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import make_video, stray_threads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bttf
from bttf.cli import main
from bttf.errors import BadInputError, WeightsError
from bttf.models import create_model, load_model, save_weights
from bttf.pipeline import ColorizeConfig
from bttf.pipeline.decode import MAX_SIDE, probe_video, read_frames
from bttf.pipeline.encode import VideoWriter

FAST = {"render_size": 32, "batch_size": 4, "preset": "ultrafast", "device": "cpu", "threads": 1}
FAST_ARGS = [
    "--render-size",
    "32",
    "--batch-size",
    "4",
    "--preset",
    "ultrafast",
    "--device",
    "cpu",
    "--threads",
    "1",
    "-q",
]


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    """What a run left in `folder` beside the files in `keep` (partials, work folders…)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def frames_of(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(c.streams.video[0]))


def corrupt_packets(src: Path, dst: Path, indices: list[int]) -> list[int]:
    """Copy `src` to `dst` with the payload of these video packets (decode order) zeroed;
    returns every video packet's pts."""
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
    for i in indices:
        p = packets[i]
        data[p.pos + 4 : p.pos + p.size] = bytes(p.size - 4)
    dst.write_bytes(bytes(data))
    return [p.pts for p in packets]


# --- inputs that must be refused in one line -----------------------------------------------


def _zero_frames_mp4(path: Path) -> None:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()


def _zero_frames_mkv(path: Path) -> None:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()


def _truncated(path: Path, tiny: Path) -> None:
    data = tiny.read_bytes()  # moov at the end: half a file has no index at all
    path.write_bytes(data[: len(data) // 2])


def _y4m(w: int, h: int):
    def build(path: Path) -> None:
        header = f"YUV4MPEG2 W{w} H{h} F24:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
        path.write_bytes(header + b"\x80" * 4096)

    return build


REFUSED = [
    ("zero.mp4", lambda p, t: p.write_bytes(b""), "is empty"),
    (
        "random.mp4",
        lambda p, t: p.write_bytes(np.random.default_rng(1).bytes(6000)),
        "not a video or image",
    ),
    ("half.mp4", _truncated, "still being written"),  # just cut: no moov, changed seconds ago
    ("noframes.mp4", lambda p, t: _zero_frames_mp4(p), "no video stream"),
    ("noframes.mkv", lambda p, t: _zero_frames_mkv(p), "before its first frame"),
    ("huge.y4m", lambda p, t: _y4m(16000, 16000)(p), "declares a 16000x16000 picture"),
    ("absurd.y4m", lambda p, t: _y4m(100000, 100000)(p), "not a video or image"),
]


@pytest.mark.parametrize("name,build,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_unusable_input_is_one_line_exit_2(
    tmp_path: Path, tiny_video: Path, capsys, name: str, build, message: str
) -> None:
    src = tmp_path / "in" / name
    src.parent.mkdir()
    build(src, tiny_video)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = run_main(["colorize", str(src), "-o", str(out_dir / "o.mp4"), *FAST_ARGS], capsys)
    assert code == 2, err
    assert err.startswith("bttf: error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err and leftovers(out_dir, set()) == []


def test_declared_size_is_checked_before_decoding(tmp_path: Path) -> None:
    src = tmp_path / "tall.y4m"
    _y4m(64, MAX_SIDE + 2)(src)  # under FFmpeg's own limit, over ours
    with pytest.raises(BadInputError, match=f"64x{MAX_SIDE + 2}"):
        probe_video(src)


# --- unusual but valid inputs give a correct output ------------------------------------------


def _several_streams(path: Path, subtitle: str) -> Path:
    """H.264 video, two AAC tracks (48 and 44.1 kHz) and a subtitle track (pre-encoded)."""
    from conftest import luma

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        tracks = []
        for rate in (48000, 44100):
            a = out.add_stream("aac", rate=rate)
            a.layout = "mono"
            tracks.append(a)
        subs = out.add_mux_stream(subtitle)
        for i in range(12):
            f = av.VideoFrame(64, 48, "yuv420p")
            for k, plane in enumerate(f.planes):
                a = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, -1)
                a[:, : plane.width] = luma(i, 64, 48) if k == 0 else 128
            f.pts, f.time_base = i, Fraction(1, 24)
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        for a in tracks:
            r = a.codec_context.sample_rate
            for s in range(0, r // 2, 1024):
                af = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                af.sample_rate, af.pts, af.time_base = r, s, Fraction(1, r)
                out.mux(a.encode(af))
            out.mux(a.encode(None))
        text = b"\x00\x05Hello" if subtitle == "mov_text" else b"Hello"
        p = av.Packet(text)
        p.stream, p.time_base = subs, Fraction(1, 1000)
        p.pts = p.dts = 0
        p.duration = 400
        out.mux(p)
    return path


@pytest.mark.parametrize(
    "kind", ["321x241", "h264-10bit", "gray10", "yuv444p", "streams-mkv", "streams-mp4"]
)
def test_unusual_valid_inputs(tmp_path: Path, kind: str) -> None:
    if kind == "321x241":  # odd in both directions, 4:2:0 (FFV1 holds it)
        src = make_video(
            tmp_path / "odd.mkv", width=321, height=241, frames=6, codec="ffv1", audio=None
        )
    elif kind == "h264-10bit":
        src = make_video(tmp_path / "ten.mp4", frames=6, pix_fmt="yuv420p10le")
    elif kind == "gray10":
        src = make_video(
            tmp_path / "g10.mkv", frames=6, codec="ffv1", pix_fmt="gray10le", audio=None
        )
    elif kind == "yuv444p":
        src = make_video(tmp_path / "444.mp4", frames=6, pix_fmt="yuv444p")
    else:
        ext, codec = ("mkv", "subrip") if kind == "streams-mkv" else ("mp4", "mov_text")
        src = _several_streams(tmp_path / f"streams.{ext}", codec)
    out = tmp_path / f"out{src.suffix}"
    stats = bttf.colorize_video(src, out, ColorizeConfig(**FAST))
    n_src = len(frames_of(src))
    got = frames_of(out)
    assert stats.frames == len(got) == n_src
    with av.open(str(src)) as s, av.open(str(out)) as o:
        assert len(o.streams.audio) == len(s.streams.audio)
        assert o.streams.video[0].width >= s.streams.video[0].width
    if kind.startswith("streams"):
        assert len(got) == 12
        with av.open(str(out)) as o:  # carried over (#21), not dropped with a notice
            assert len(o.streams.subtitles) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_truncated_stream_gives_what_is_there_with_a_notice(tmp_path: Path) -> None:
    whole = make_video(tmp_path / "whole.mkv", audio=None)  # Matroska: readable up to the cut
    data = whole.read_bytes()
    half = tmp_path / "half.mkv"
    half.write_bytes(data[: len(data) // 2])
    stats = bttf.colorize_video(half, tmp_path / "out.mp4", ColorizeConfig(**FAST))
    assert 0 < stats.frames == len(frames_of(tmp_path / "out.mp4")) < 24
    assert any("truncated" in n for n in stats.notices)


# --- damaged frames in the middle of a stream -------------------------------------------------


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[int]]:
    """(clean, damaged) 24-frame MJPEG films; frames 10 and 11 of `damaged` do not decode."""
    d = tmp_path_factory.mktemp("damaged")
    clean = make_video(d / "clean.mkv", codec="mjpeg", pix_fmt="yuvj420p", audio=None)
    bad = d / "damaged.mkv"
    pts = corrupt_packets(clean, bad, [10, 11])
    return clean, bad, pts


def test_repeat_keeps_every_timestamp(damaged, tmp_path: Path) -> None:
    clean, bad, _ = damaged
    out = tmp_path / "rep.mkv"
    stats = bttf.colorize_video(bad, out, ColorizeConfig(**FAST, crf=0, temporal=False))
    src, got = frames_of(clean), frames_of(out)
    assert stats.repeated == 2 and stats.frames == len(got) == 24
    assert [f.time for f in got] == [f.time for f in src]
    y = [f.to_ndarray(format="gray") for f in got]
    assert np.array_equal(y[10], y[9]) and np.array_equal(y[11], y[9])
    assert not np.array_equal(y[12], y[9])
    assert "2 damaged frames repeated" in stats.summary()


def test_skip_drops_and_stretches_the_previous_frame(damaged, tmp_path: Path) -> None:
    clean, bad, _ = damaged
    out = tmp_path / "skip.mkv"
    stats = bttf.colorize_video(
        bad, out, ColorizeConfig(**FAST, temporal=False, on_decode_error="skip")
    )
    src, got = frames_of(clean), frames_of(out)
    assert stats.dropped == 2 and stats.frames == len(got) == 22
    assert [f.time for f in got] == [f.time for i, f in enumerate(src) if i not in (10, 11)]
    assert got[9].duration == src[12].pts - src[9].pts  # frame 9 lasts until frame 12
    assert "2 damaged frames skipped" in stats.summary()


def test_fail_stops_with_exit_2(damaged, tmp_path: Path, capsys) -> None:
    _, bad, _ = damaged
    out = tmp_path / "fail.mp4"
    code, err = run_main(
        ["colorize", str(bad), "-o", str(out), "--on-decode-error", "fail", *FAST_ARGS], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "--on-decode-error" in err
    assert leftovers(tmp_path, set()) == []


def test_damaged_first_frame_is_filled_by_the_next_good_one(tmp_path: Path) -> None:
    clean = make_video(tmp_path / "c.mkv", frames=8, codec="mjpeg", pix_fmt="yuvj420p", audio=None)
    bad = tmp_path / "b.mkv"
    corrupt_packets(clean, bad, [0])
    info = probe_video(bad)  # the first frame that decodes describes the film
    frames = list(read_frames(info, on_error="repeat"))
    assert len(frames) == 8 and frames[0].repeated and frames[0].pts == 0
    assert np.array_equal(frames[0].y, frames[1].y)


def test_h264_damage_found_through_frame_threads(tmp_path: Path) -> None:
    """H.264 with B-frames: errors come late and out of order; lost frames are still found by
    their timestamps, and repeated at them."""
    clean = make_video(tmp_path / "c.mp4", audio=None)
    bad = tmp_path / "b.mp4"
    corrupt_packets(clean, bad, [10, 11])
    frames = list(read_frames(probe_video(bad), on_error="repeat"))
    assert [f.pts for f in frames] == [f.pts for f in frames_of(clean)]
    assert sum(f.repeated for f in frames) >= 1


# --- destinations that cannot be written ------------------------------------------------------


def test_output_under_a_file(tiny_video: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, err = run_main(
        ["colorize", str(tiny_video), "-o", str(blocker / "o.mp4"), *FAST_ARGS], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "is a file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: see the simulated test")
def test_unwritable_folder(tiny_video: Path, tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = run_main(
            ["colorize", str(tiny_video), "-o", str(locked / "o.mp4"), *FAST_ARGS], capsys
        )
    finally:
        locked.chmod(0o755)
    assert code == 2 and "cannot write in" in err and list(locked.iterdir()) == []


def test_unwritable_folder_simulated(
    tiny_video: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, err = run_main(
        ["colorize", str(tiny_video), "-o", str(tmp_path / "o.mp4"), *FAST_ARGS], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "cannot write in" in err
    assert leftovers(tmp_path, set()) == []


def test_disk_full_mid_run(
    tiny_video: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = VideoWriter.write
    written = []

    def filling(self, *a, **k):
        written.append(1)
        if len(written) > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(VideoWriter, "write", filling)
    code, err = run_main(
        ["colorize", str(tiny_video), "-o", str(tmp_path / "o.mp4"), *FAST_ARGS], capsys
    )
    assert code == 1 and err.count("\n") == 1 and "disk is full" in err
    assert leftovers(tmp_path, set()) == []


# --- weights ----------------------------------------------------------------------------------


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    evil = _Evil()
    evil.marker = str(tmp_path / "PWNED")
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"weight": evil}))
    with pytest.raises(
        WeightsError, match="weights_only.*state_dict|makedirs|not a readable PyTorch"
    ):
        load_model(path, name="fastcolor")
    assert not (tmp_path / "PWNED").exists()


def test_malformed_weights_are_clear_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    good = save_weights(
        tmp_path / "good.safetensors", create_model("fastcolor", pretrained=False), "fastcolor", {}
    )
    data = good.read_bytes()
    cases = {
        "empty.safetensors": b"",
        "half.safetensors": data[: len(data) // 2],
        "huge-header.safetensors": (10**15).to_bytes(8, "little") + b"{}",
        "empty.pth": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(WeightsError, match=name):
            load_model(tmp_path / name, name="fastcolor")
    save_file(
        {"a": torch.zeros(2)},
        str(tmp_path / "cfg.safetensors"),
        metadata={"format": "bttf-1", "bttf_model": "fastcolor", "bttf_config": "{oops"},
    )
    with pytest.raises(WeightsError, match="not JSON"):
        load_model(tmp_path / "cfg.safetensors")
    save_file(
        {"a": torch.zeros(2)},
        str(tmp_path / "who.safetensors"),
        metadata={"format": "bttf-1", "bttf_model": "nosuch", "bttf_config": "{}"},
    )
    with pytest.raises(WeightsError, match="who.safetensors.*nosuch"):
        load_model(tmp_path / "who.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="does not hold a state dict"):
        load_model(tmp_path / "list.pth", name="fastcolor")


def test_bad_weights_through_the_cli(tiny_video: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "w.pth"
    torch.save({"weight": torch.nn.Linear(2, 2)}, bad)  # a module inside: needs a full unpickler
    code, err = run_main(
        [
            "colorize",
            str(tiny_video),
            "-o",
            str(tmp_path / "o.mp4"),
            "--weights",
            str(bad),
            *FAST_ARGS,
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and ("weights_only" in err or "state dicts" in err)
    assert not (tmp_path / "o.mp4").exists()


# --- fuzz: mutated bytes of a valid mp4 -------------------------------------------------------

_SEED_CLIP: dict[str, bytes] = {}


def _seed_clip() -> bytes:
    if "mp4" not in _SEED_CLIP:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            path = make_video(Path(d) / "seed.mp4", frames=12, options={"preset": "ultrafast"})
            fast = Path(d) / "faststart.mp4"  # index first: a cut file still opens
            with (
                av.open(str(path)) as src,
                av.open(str(fast), "w", options={"movflags": "faststart"}) as out,
            ):
                streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
                for packet in src.demux():
                    if packet.dts is not None:
                        packet.stream = streams[packet.stream.index]
                        out.mux(packet)
            _SEED_CLIP["mp4"] = fast.read_bytes()
    return _SEED_CLIP["mp4"]


def _run_in_thread(args: list[str], timeout: float) -> tuple[int | None, str, bool]:
    """main(args) on a worker thread: (exit code, stderr, finished within `timeout`)."""
    err = io.StringIO()
    result: list[int | None] = [None]

    def target() -> None:
        with contextlib.redirect_stderr(err):
            try:
                main(args)
                result[0] = 0
            except SystemExit as e:
                result[0] = e.code if isinstance(e.code, int) else 1

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return result[0], err.getvalue(), not t.is_alive()


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=24
    ),
    cut=st.one_of(st.none(), st.floats(0.05, 1)),
)
def test_fuzz_mutated_mp4(edits: list[tuple[float, int]], cut: float | None) -> None:
    import tempfile

    data = bytearray(_seed_clip())
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    with tempfile.TemporaryDirectory() as d:
        src, out_dir = Path(d) / "in.mp4", Path(d) / "out"
        src.write_bytes(bytes(data))
        out_dir.mkdir()
        dst = out_dir / "o.mp4"
        code, err, finished = _run_in_thread(
            ["colorize", str(src), "-o", str(dst), "--no-temporal", *FAST_ARGS], timeout=60
        )
        assert finished, "bttf hung on a mutated file"
        assert code in (0, 2), err
        assert "Traceback" not in err
        if code == 2:
            assert err.startswith("bttf: error: ") and err.count("\n") == 1, err
            assert leftovers(out_dir, set()) == []
        else:
            assert leftovers(out_dir, set()) == ["o.mp4"]
            assert len(frames_of(dst)) >= 1


def test_no_stray_threads_after_the_fuzz() -> None:
    assert stray_threads() == []
