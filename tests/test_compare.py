"""`bttf compare`: the sheet's layout and size, for an image, a gray image and a film."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from bttf.cli import cli
from bttf.errors import BadInputError, OutputExistsError, UnknownModelError
from bttf.models import create_model, save_weights
from bttf.pipeline.compare import CAPTION_HEIGHT, CompareConfig, compare

MODELS = ("mean-chroma", "unet-ae")


def _colour(h: int = 48, w: int = 64, shift: int = 0) -> np.ndarray:
    """uint8 RGB: a green field with a red square that moves with `shift`."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (40, 170, 60)
    img[h // 4 : h // 2, shift : shift + w // 4] = (210, 40, 40)
    return img


@pytest.fixture(scope="module")
def colour_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cmp") / "colour.png"
    cv2.imwrite(str(path), cv2.cvtColor(_colour(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def colour_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 colour frames of 64 x 48 at 24 fps (H.264)."""
    path = tmp_path_factory.mktemp("cmp") / "colour.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(24):
            out.mux(s.encode(av.VideoFrame.from_ndarray(_colour(shift=i), format="rgb24")))
        out.mux(s.encode(None))
    return path


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = create_model("cnn-ae", variant="deep", widths=[4, 8, 8, 8, 8])
    return save_weights(
        tmp_path_factory.mktemp("cmp") / "cnn_deep.safetensors", model, "cnn-ae", model.bttf_config
    )


def test_image_sheet_has_gray_models_and_truth(
    colour_png: Path, small_weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sheet.png"
    r = compare(
        CompareConfig(
            colour_png, out, models=MODELS, weights=(small_weights,), tile_height=48, device="cpu"
        )
    )
    assert r.has_truth and r.rows == 1 and r.tile == (64, 48)
    labels = [c.label for c in r.columns]
    assert labels[0] == "gray input" and labels[-1] == "truth"
    assert labels[1:3] == ["mean-chroma (untrained)", "unet-ae (untrained)"]
    assert labels[3] == "cnn-ae (cnn_deep)"
    sheet = cv2.imread(str(out))
    assert sheet.shape == (48 + CAPTION_HEIGHT, 5 * 64, 3) == (r.height, r.width, 3)
    # The gray column is the no-colour baseline, scored against the truth like the models.
    gray = r.columns[0].metrics[0]
    assert gray["colorfulness"] < 0.05  # float rounding of a neutral gray
    assert 0 < gray["auc"] < 1 and np.isfinite(gray["psnr"])
    assert r.columns[-1].metrics[0]["colorfulness"] > 20
    # Gray tile: the input's lightness only.
    tile = sheet[:48, :64].astype(int)
    assert np.abs(tile[..., 0] - tile[..., 2]).max() <= 1


def test_gray_input_has_no_truth_column(gray_png: Path, tmp_path: Path) -> None:
    r = compare(
        CompareConfig(gray_png, tmp_path / "sheet.jpg", models=MODELS, tile_height=24, device="cpu")
    )
    assert not r.has_truth and [c.kind for c in r.columns] == ["gray", "model", "model"]
    assert "psnr" not in r.columns[1].metrics[0]
    assert cv2.imread(str(r.output)).shape == (24 + CAPTION_HEIGHT, 3 * 32, 3)


def test_video_sheet_is_one_row_per_frame(colour_clip: Path, tmp_path: Path) -> None:
    r = compare(
        CompareConfig(
            colour_clip,
            tmp_path / "strip.png",
            models=("mean-chroma",),
            frames=3,
            tile_height=48,
            device="cpu",
        )
    )
    assert r.rows == 3 and r.has_truth
    assert r.frame_times == sorted(r.frame_times) and len(set(r.frame_times)) == 3
    # the middles of three equal parts of 1 s: about 1/6, 1/2 and 5/6 s
    assert r.frame_times == pytest.approx([1 / 6, 1 / 2, 5 / 6], abs=1 / 24 + 1e-6)
    assert cv2.imread(str(r.output)).shape == (3 * (48 + CAPTION_HEIGHT), 3 * 64, 3)


def test_more_frames_than_the_film_has(colour_clip: Path, tmp_path: Path) -> None:
    r = compare(
        CompareConfig(
            colour_clip,
            tmp_path / "all.png",
            models=("mean-chroma",),
            frames=40,
            tile_height=16,
            device="cpu",
        )
    )
    assert r.rows == 24
    assert len(set(r.frame_times)) == 24


def test_cli_compare(colour_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    args = [
        "compare",
        str(colour_clip),
        "-m",
        "mean-chroma",
        "--models",
        "unet-ae",
        "-o",
        str(out),
        "--frames",
        "2",
        "--height",
        "32",
        "--device",
        "cpu",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    # 32 px tall tiles of a 4:3 film are round(64 * 32 / 48) = 43 px wide; 4 columns, 2 rows.
    assert cv2.imread(str(out)).shape == (2 * (32 + CAPTION_HEIGHT), 4 * 43, 3)
    again = CliRunner().invoke(cli, args)
    assert isinstance(again.exception, OutputExistsError)
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0


def test_compare_errors(colour_png: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="suffix"):
        compare(CompareConfig(colour_png, tmp_path / "sheet.mp4", models=MODELS))
    with pytest.raises(BadInputError, match="nothing to compare"):
        compare(CompareConfig(colour_png, tmp_path / "sheet.png"))
    res = CliRunner().invoke(
        cli, ["compare", str(colour_png), "-m", "mean-chroma,nope", "-o", str(tmp_path / "s.png")]
    )
    assert isinstance(res.exception, UnknownModelError)
