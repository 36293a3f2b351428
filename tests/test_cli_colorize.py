"""`bttf colorize`: in-process with click's CliRunner, and through `main()` for the one-line
errors and exit codes a user sees."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import cv2
import pytest
from click.testing import CliRunner

from bttf.cli import cli, main
from bttf.cli.colorize import colorize_cmd

FAST = [
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
]


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run the real entry point; (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def test_colorize_a_film(tiny_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(cli, ["colorize", str(tiny_video), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert frame_count(out) == 24
    assert "24 frames in" in result.stderr and "fps" in result.stderr and "model" in result.stderr


def test_quiet_prints_nothing(tiny_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.mp4"
    result = CliRunner().invoke(cli, ["colorize", str(tiny_video), "-o", str(out), "-q", *FAST])
    assert result.exit_code == 0 and result.output == ""
    assert out.exists()


def test_default_output_name_and_time_syntax(tiny_video: Path, tmp_path: Path) -> None:
    src = tmp_path / "film.mp4"
    shutil.copy(tiny_video, src)
    args = ["colorize", str(src), "--start", "0:00.25", "--duration", "00:00:00.5", "-q", *FAST]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert frame_count(tmp_path / "film_color.mp4") == 12


def test_weights_file_alone_picks_its_model(tiny_video: Path, tmp_path: Path) -> None:
    from bttf.models import create_model, save_weights

    model = create_model("fastcolor", pretrained=False)
    weights = save_weights(tmp_path / "mine.safetensors", model, "fastcolor", {})
    out = tmp_path / "w.mp4"
    args = ["colorize", str(tiny_video), "-o", str(out), "--weights", str(weights), *FAST]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "fastcolor on cpu" in result.stderr


def test_colorize_an_image(gray_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "photo_color.png"
    result = CliRunner().invoke(cli, ["colorize", str(gray_png), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out)).shape == (48, 64, 3)


@pytest.mark.parametrize(
    "extra,hint",
    [
        (["--device", "tpu"], "--device"),
        (["--pix-fmt", "rgb24"], "--pix-fmt"),
        (["--start", "soon"], "--start"),
        (["--batch-size", "0"], "--batch-size"),
        (["--temperature", "0"], "--temperature"),
    ],
)
def test_bad_options_are_usage_errors(
    tiny_video: Path, tmp_path: Path, extra: list[str], hint: str
) -> None:
    args = ["colorize", str(tiny_video), "-o", str(tmp_path / "o.mp4"), *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and hint in result.output
    assert not (tmp_path / "o.mp4").exists()


# --- through main(): one line, exit codes ----------------------------------------------------


def test_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run_main(
        ["colorize", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4")], capsys
    )
    assert code == 2 and err.startswith("bttf: error: ") and "does not exist" in err
    assert err.count("\n") == 1


def test_text_file_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "notes.mov"
    text.write_text("this is not a film\n" * 10)
    code, err = run_main(["colorize", str(text), "-o", str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "is not a video or image PyAV can read" in err


def test_audio_only_input(audio_only: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run_main(["colorize", str(audio_only), "-o", str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no video stream" in err


def test_unknown_model(tiny_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = run_main(
        ["colorize", str(tiny_video), "-o", str(tmp_path / "o.mp4"), "--model", "nosuch"], capsys
    )
    assert code == 2 and "unknown model 'nosuch'" in err and "fastcolor" in err


def test_existing_output_untouched(
    tiny_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"mine")
    code, err = run_main(["colorize", str(tiny_video), "-o", str(out), *FAST], capsys)
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == b"mine"


def test_bad_option_through_main(
    tiny_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, err = run_main(
        ["colorize", str(tiny_video), "-o", str(tmp_path / "o.mp4"), "--device", "tpu"], capsys
    )
    assert code == 2 and "--device" in err


@pytest.mark.parametrize(
    "args, words",
    [
        (["colorize", "IN", "--temperature", "0"], ["--temperature", "bttf colorize --help"]),
        (["colorize"], ["Missing argument 'INPUT'"]),
        (["eval", "IN", "--render-size", "8"], ["--render-size", "bttf eval --help"]),
        (["nosuchcommand"], ["nosuchcommand", "bttf --help"]),
    ],
)
def test_usage_errors_are_one_line(
    tiny_video: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    args: list[str],
    words: list[str],
) -> None:
    args = [str(tiny_video) if a == "IN" else a for a in args]
    code, err = run_main(args, capsys)
    assert code == 2 and err.startswith("bttf: error: ") and err.count("\n") == 1, err
    assert all(w in err for w in words) and not list(tmp_path.iterdir())


def test_bare_bttf_prints_the_help(capsys: pytest.CaptureFixture) -> None:
    _, err = run_main([], capsys)
    assert "Usage: bttf" in err and "colorize" in err and "bttf: error" not in err


def test_interrupt_exits_130_and_cleans_up(
    tiny_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from bttf.models import Colorizer

    real = Colorizer.predict
    calls = []

    def interrupted(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the second batch
            raise KeyboardInterrupt
        return real(self, *a, **k)

    # the CLI builds its own colorizer: the public Colorizer class's predict is the seam
    monkeypatch.setattr(Colorizer, "predict", interrupted)
    out = tmp_path / "int.mp4"
    code, err = run_main(["colorize", str(tiny_video), "-o", str(out), *FAST], capsys)
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bttf.errors import BadInputError

    monkeypatch.setenv("BTTF_DEBUG", "1")
    with pytest.raises(BadInputError):
        main(["colorize", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4")])


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(cli, ["colorize", "--help"])
    assert result.exit_code == 0
    for opt in (
        "--model",
        "--weights",
        "--device",
        "--render-size",
        "--batch-size",
        "--temperature",
        "--top-k",
        "--codec",
        "--crf",
        "--preset",
        "--pix-fmt",
        "--start",
        "--duration",
        "--overwrite",
        "--quiet",
    ):
        assert opt in result.output
    assert colorize_cmd.name == "colorize"
