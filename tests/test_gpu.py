"""The CUDA paths, each against its CPU twin: `python -m pytest -m gpu` on a machine with a GPU.

Deselected by default (pyproject's `-m 'not gpu'`) and skipped without a CUDA
device. On the GPU the engine runs the model under bf16 (or fp16) autocast, uploads frames
from pinned memory and builds the chroma planes on the device; the CPU runs float32. So the
checks are "the same film within what autocast changes", not bit equality, except where the
GPU must not change anything (the source's luma plane, timing, cut decisions).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_cuts import pan, texture
from test_temporal import content_logits
from test_training import cache, cfg_for  # noqa: F401 - `cache` is a fixture

import bttf
from bttf.models import Colorizer, create_model, get_spec, list_models, load_model
from bttf.pipeline import ColorizeConfig
from bttf.pipeline.stages import ModelStage
from bttf.pipeline.temporal import Stabilizer
from bttf.training.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

LOSSLESS = {"preset": "ultrafast", "crf": 0, "render_size": 64, "batch_size": 4}


def planes(path: Path) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Y (N, H, W), Cb and Cr stacked (N, 2, H/2, W/2) as int16, and the frame times."""
    ys, cs, times = [], [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            p = [
                np.frombuffer(q, np.uint8).reshape(q.height, q.line_size)[:, : q.width]
                for q in f.planes
            ]
            ys.append(p[0].astype(np.int16))
            cs.append(np.stack(p[1:]).astype(np.int16))
            times.append(float(f.time))
    return np.stack(ys), np.stack(cs), times


@pytest.mark.parametrize("temporal", [False, True])
def test_colorize_video_on_cuda_matches_cpu(
    tiny_video: Path, tmp_path: Path, temporal: bool
) -> None:
    outs = {}
    for k, device in enumerate(("cpu", "cuda")):
        dst = tmp_path / f"{k}-{device}.mp4"
        st = bttf.colorize_video(
            tiny_video, dst, ColorizeConfig(device=device, temporal=temporal, **LOSSLESS)
        )
        assert st.device.startswith(device) and st.frames == 24
        outs[k] = planes(dst)
    (y_cpu, c_cpu, t_cpu), (y_gpu, c_gpu, t_gpu) = outs[0], outs[1]
    assert np.array_equal(y_cpu, y_gpu) and t_cpu == t_gpu  # the source's luma and timing
    diff = np.abs(c_cpu - c_gpu)
    # bf16 logits move the annealed mean by a level or two; a wrong matrix, range or channel
    # order on the device moves it by tens
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 12, (diff.mean(), diff.max())


def test_auto_device_picks_the_gpu(tiny_video: Path, tmp_path: Path) -> None:
    st = bttf.colorize_video(tiny_video, tmp_path / "auto.mp4", ColorizeConfig(**LOSSLESS))
    assert st.device.startswith("cuda")


def test_stabilizer_on_cuda_matches_cpu() -> None:
    frames = np.stack(pan(texture(3), 20, 1.5))
    logits = content_logits(list(frames)) + torch.randn(
        20, 313, 12, 16, generator=torch.Generator().manual_seed(0)
    )
    got = {}
    for device in ("cpu", "cuda"):
        st = Stabilizer()
        parts = [
            st(frames[i : i + 4], logits[i : i + 4].to(device), "bins", temperature=0.38)
            for i in range(0, 20, 4)
        ]
        got[device] = torch.cat(parts).cpu()
        assert st.cuts == []
    gap = (got["cpu"] - got["cuda"]).abs().max()
    assert gap < 1e-2, gap


ZOO = [m for m in list_models() if not m.startswith(("test-", "bench-"))]


@pytest.mark.parametrize("name", ZOO)
def test_every_model_runs_under_the_engines_autocast(name: str) -> None:
    """Random weights: each architecture's forward and decode under the engine's CUDA autocast
    give finite ab of the right shape (dtype mistakes show here, not on the CPU)."""
    spec = get_spec(name)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    colorizer = Colorizer(create_model(name, pretrained=False), spec).eval().to(dev)
    colorizer = colorizer.to(memory_format=torch.channels_last)  # as build_colorizer does
    stage = ModelStage(colorizer, dev, 2)
    s = spec.stride * max(1, 64 // spec.stride)
    L = torch.rand(2, 1, s, 2 * s, device=dev) * 100
    with torch.inference_mode():
        ab = colorizer.decode(stage.predict(L), (s, 2 * s))
    assert ab.shape == (2, 2, s, 2 * s) and ab.dtype == torch.float32 and torch.isfinite(ab).all()


def test_training_steps_on_cuda_with_amp(cache: Path, tmp_path: Path) -> None:  # noqa: F811
    result = train(cfg_for(cache, tmp_path / "run", device="cuda", amp=True))
    assert result.steps == 4 and Path(result.last).is_file()
    model, _, _ = load_model(result.last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
