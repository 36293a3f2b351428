"""The training loop, losses and `eval`, on tiny generated data on the CPU (a few steps each)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bttf.models  # noqa: F401 - registers the models
from bttf.errors import BadInputError, OutputExistsError
from bttf.models import list_models, register_model
from bttf.training import data as D
from bttf.training.evaluate import EvalConfig, evaluate
from bttf.training.loop import TrainConfig, TrainEvent, encoder_parameter_names, lr_factor, train
from bttf.training.losses import (
    BinCrossEntropy,
    GanObjective,
    build_loss,
    normalized_weights,
)

TINY_AB = "test-tiny-ab"


class TinyAb(nn.Module):
    """A test-only ab regressor: L -> ab at stride 2 (a few hundred parameters)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1), nn.ReLU()
        )
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(L / 50.0 - 1.0)) * 50.0


if TINY_AB not in list_models():
    register_model(TINY_AB, output="ab", stride=4, render_size=32)(lambda **kw: TinyAb(**kw))


def make_images(folder: Path, n: int, size: tuple[int, int] = (40, 40), seed: int = 0) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(n):
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = (np.arange(w) / w)[None, :, None]
        img = np.broadcast_to(c1 * (1 - t) + c2 * t, (h, w, 3)).astype(np.uint8).copy()
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(img, (w // 2, h // 2), h // 4, colour, -1)
        cv2.imwrite(str(folder / f"img{i:02d}.png"), img)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_images(root / "photos", 10)
    D.prepare(
        D.PrepareConfig(inputs=(root / "photos",), out=root / "cache", size=32, val_fraction=0.2)
    )
    return root / "cache"


def cfg_for(cache: Path, out: Path, **kw) -> TrainConfig:
    base = {
        "data": (cache,),
        "model": "fastcolor",
        "out": out,
        "steps": 4,
        "batch_size": 4,
        "image_size": 32,
        "lr": 3e-3,
        "warmup_steps": 0,
        "workers": 0,
        "threads": 1,
        "val_images": 4,
        "sample_images": 2,
    }
    return TrainConfig(**{**base, **kw})


def losses_of(run: Path) -> list[str]:
    with open(run / "metrics.csv", newline="") as f:
        return [r["loss"] for r in csv.DictReader(f)]


def test_fastcolor_run_writes_everything(cache: Path, tmp_path: Path) -> None:
    events: list[TrainEvent] = []
    res = train(cfg_for(cache, tmp_path / "run", steps=4, val_every=2), events.append)
    assert res.steps == 4
    for name in ("last.safetensors", "best.safetensors", "state.pt", "metrics.csv", "loss.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert list((tmp_path / "run" / "samples").glob("epoch_*.png"))
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[1]["val_auc_rebal"] and rows[3]["val_psnr"] and not rows[0]["val_loss"]
    assert 0 < float(rows[3]["val_auc"]) <= 1 and float(rows[3]["images_per_s"]) > 0
    kinds = {e.kind for e in events}
    assert {"start", "step", "val", "done"} <= kinds
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["step"] == 4 and "optimizer" in state and "numpy" in state["rng"]

    from bttf.models import Colorizer, load_model

    model, spec, meta = load_model(tmp_path / "run" / "best.safetensors")
    assert spec.name == "fastcolor" and len(meta["prior"]) == 313
    assert meta["step"] in (2, 4) and "auc_rebal" in meta["val_metrics"]
    assert abs(sum(meta["prior"]) - 1) < 1e-3
    ab = Colorizer(model, spec)(torch.full((1, 1, 32, 32), 50.0))
    assert ab.shape == (1, 2, 32, 32) and torch.isfinite(ab).all()
    import cv2

    from bttf import ColorizeConfig, colorize_image

    cv2.imwrite(str(tmp_path / "gray.png"), np.full((32, 48), 120, np.uint8))
    colorize_image(
        tmp_path / "gray.png",
        tmp_path / "out.png",
        ColorizeConfig(weights=tmp_path / "run" / "best.safetensors"),
    )
    assert cv2.imread(str(tmp_path / "out.png")).shape == (32, 48, 3)


def test_fastcolor_overfits_four_images(tmp_path: Path) -> None:
    make_images(tmp_path / "four", 4, seed=3)
    D.prepare(
        D.PrepareConfig(inputs=(tmp_path / "four",), out=tmp_path / "c", size=32, val_fraction=0.0)
    )
    cfg = cfg_for(
        tmp_path / "c", tmp_path / "run", steps=40, augment=False, lr=5e-3, loss="rebalanced"
    )
    train(cfg)
    loss = [float(x) for x in losses_of(tmp_path / "run")]
    assert np.mean(loss[-5:]) < 0.6 * np.mean(loss[:5]), loss


@pytest.mark.parametrize("loss", ["l1", "huber", "l2", "gan"])
def test_ab_model_trains(cache: Path, tmp_path: Path, loss: str) -> None:
    steps = 40 if loss == "l1" else 3
    train(
        cfg_for(
            cache,
            tmp_path / "run",
            model=TINY_AB,
            loss=loss,
            steps=steps,
            augment=False,
            lr=1e-2,
            val_every=1000,
        )
    )
    values = [float(x) for x in losses_of(tmp_path / "run")]
    assert all(math.isfinite(v) for v in values)
    if loss == "l1":
        assert np.mean(values[-5:]) < 0.8 * np.mean(values[:5]), values
    if loss == "gan":
        state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
        assert "discriminator" in state and "d_optimizer" in state


class Killed(Exception):
    """Stands for a run stopped from outside (a crash, Ctrl-C)."""


def kill_after(step: int):
    def progress(e: TrainEvent) -> None:
        if e.kind in ("step", "val") and e.step == step:
            raise Killed

    return progress


def test_resume_equals_an_uninterrupted_run(cache: Path, tmp_path: Path) -> None:
    cfg = cfg_for(cache, tmp_path / "full", steps=6, save_every=3, val_every=1000, workers=1)
    train(cfg)

    killed = replace(cfg, out=tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed, kill_after(3))
    assert torch.load(tmp_path / "killed" / "state.pt", weights_only=True)["step"] == 3
    with pytest.raises(OutputExistsError):
        train(killed)
    res = train(replace(killed, resume=True))
    assert res.steps == 6
    full, resumed = losses_of(tmp_path / "full"), losses_of(tmp_path / "killed")
    assert len(full) == 6 and resumed == full


def test_ema_weights_are_saved_and_survive_a_resume(cache: Path, tmp_path: Path) -> None:
    from bttf.models.weights import read_weights

    cfg = cfg_for(cache, tmp_path / "full", steps=6, save_every=3, val_every=1000, ema=0.5)
    train(cfg)
    saved, _ = read_weights(tmp_path / "full" / "last.safetensors")
    state = torch.load(tmp_path / "full" / "state.pt", weights_only=True)
    avg = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    key = next(k for k in saved if k.endswith("weight") and saved[k].ndim == 4)
    assert not torch.allclose(saved[key], state["model"][key])  # not the raw weights
    assert torch.equal(saved[key], avg[key])  # the average
    assert int(state["ema"]["n_averaged"]) == 6

    killed = replace(cfg, out=tmp_path / "killed")
    with pytest.raises(Killed):
        train(killed, kill_after(3))
    train(replace(killed, resume=True))
    resumed, _ = read_weights(tmp_path / "killed" / "last.safetensors")
    assert all(torch.equal(saved[k], resumed[k]) for k in saved)
    with pytest.raises(BadInputError, match="--ema"):
        train(cfg_for(cache, tmp_path / "bad", ema=1.0))


def test_freeze_and_unfreeze_encoder(cache: Path, tmp_path: Path) -> None:
    # 8 train images / batch 4 = 2 steps per epoch: frozen in epoch 0, unfrozen from epoch 1.
    from bttf.models import load_model

    train(
        cfg_for(
            cache,
            tmp_path / "a",
            model=TINY_AB,
            loss="l1",
            steps=2,
            freeze_encoder=True,
            unfreeze_at=1,
            val_every=1000,
        )
    )
    torch.manual_seed(0)
    init = TinyAb()
    a, _, _ = load_model(tmp_path / "a" / "last.safetensors")
    assert torch.equal(a.encoder[0].weight, init.encoder[0].weight)
    assert not torch.equal(a.head.weight, init.head.weight)
    train(
        cfg_for(
            cache,
            tmp_path / "b",
            model=TINY_AB,
            loss="l1",
            steps=4,
            freeze_encoder=True,
            unfreeze_at=1,
            val_every=1000,
            init=str(tmp_path / "a" / "last.safetensors"),
        )
    )
    b, _, _ = load_model(tmp_path / "b" / "last.safetensors")
    assert not torch.equal(b.encoder[0].weight, a.encoder[0].weight)


def test_encoder_parameter_rule() -> None:
    from bttf.models import create_model

    names = encoder_parameter_names(create_model("fastcolor", pretrained=False))
    assert any(n.startswith("stem.") for n in names) and any(n.startswith("enc16.") for n in names)
    assert not any(n.startswith("head.") for n in names)
    assert encoder_parameter_names(TinyAb()) == {
        "encoder.0.weight",
        "encoder.0.bias",
        "encoder.2.weight",
        "encoder.2.bias",
    }


def test_lr_schedule() -> None:
    f = [lr_factor(s, 100, 10, 0.02) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[9:]))
    assert f[-1] == pytest.approx(0.02, abs=1e-3)


def test_losses() -> None:
    from bttf.models.bins import rebalance_weights

    torch.manual_seed(0)
    prior = torch.rand(313) ** 4
    prior /= prior.sum()
    w = normalized_weights(prior)
    assert float((prior * w).sum()) == pytest.approx(1.0, abs=1e-5)
    logits, ab = torch.randn(2, 313, 4, 4, requires_grad=True), torch.randn(2, 2, 16, 16) * 30
    for kind in ("ce", "rebalanced", "normalized"):
        loss = build_loss(kind, "bins", prior)(logits, ab)
        loss.backward()
        assert math.isfinite(float(loss.detach())) and logits.grad is not None
    # a confident correct prediction scores lower than a uniform one
    from bttf.models.bins import soft_encode

    target = soft_encode(torch.full((1, 2, 4, 4), 20.0))
    good, flat = (target + 1e-6).log(), torch.zeros(1, 313, 4, 4)
    ce = BinCrossEntropy(rebalance_weights(prior))
    ab20 = torch.full((1, 2, 4, 4), 20.0)
    assert float(ce(good, ab20)) < float(ce(flat, ab20))
    with pytest.raises(BadInputError, match="does not fit"):
        build_loss("l2", "bins", prior)
    with pytest.raises(BadInputError, match="does not fit"):
        build_loss("rebalanced", "ab")
    with pytest.raises(BadInputError, match="prior"):
        build_loss("rebalanced", "bins", None)
    gan = GanObjective.for_model(TinyAb())
    L, fake = torch.rand(2, 1, 16, 16) * 100, torch.randn(2, 2, 8, 8)
    real = torch.randn(2, 2, 16, 16)
    g, parts = gan.generator_loss(L, fake, real)
    d = gan.discriminator_loss(L, fake, real)
    assert math.isfinite(float(g.detach())) and math.isfinite(float(d.detach()))
    assert {"g_adv", "l1"} <= set(parts)


def test_label_smoothing_and_soft_encoding_width() -> None:
    from bttf.models.bins import rebalance_weights, soft_encode

    torch.manual_seed(1)
    prior = torch.rand(313) ** 4
    prior /= prior.sum()
    logits, ab = torch.randn(2, 313, 4, 4), torch.randn(2, 2, 4, 4) * 30
    logp = torch.log_softmax(logits, 1)
    w = rebalance_weights(prior, lam=0.9)
    for sigma, eps in ((5.0, 0.0), (10.0, 0.0), (5.0, 0.1), (10.0, 0.25)):
        # the dense formula: target (1 - eps) * soft encoding + eps * prior, weighted by the
        # truth's nearest bin
        target = (1 - eps) * soft_encode(ab, sigma=sigma) + eps * prior.view(1, -1, 1, 1)
        nearest = soft_encode(ab, k=1).argmax(1)
        want = (w[nearest] * -(target * logp).sum(1)).mean()
        got = build_loss("rebalanced", "bins", prior, 0.9, sigma=sigma, smoothing=eps)(logits, ab)
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    # a wider encoding spreads the target; smoothing moves the best answer toward the prior
    assert float(soft_encode(ab, sigma=10).amax(1).mean()) < float(soft_encode(ab).amax(1).mean())
    ce = build_loss("ce", "bins", prior, smoothing=0.2)
    t = soft_encode(ab)
    mixed = (0.8 * t + 0.2 * prior.view(1, -1, 1, 1)).log()
    assert float(ce(mixed, ab)) < float(ce((t + 1e-6).log(), ab))
    with pytest.raises(BadInputError, match="bin models"):
        build_loss("l2", "ab", smoothing=0.1)
    with pytest.raises(BadInputError, match="prior"):
        build_loss("ce", "bins", None, smoothing=0.1)


def test_bad_configs_are_clear_errors(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="multiple of 16"):
        train(cfg_for(cache, tmp_path / "r", image_size=40))
    with pytest.raises(BadInputError, match="fewer than one batch"):
        train(cfg_for(cache, tmp_path / "r", batch_size=64))
    with pytest.raises(BadInputError, match="--resume"):
        train(cfg_for(cache, tmp_path / "r2", resume=True))
    with pytest.raises(BadInputError, match="does not exist"):
        train(cfg_for(cache, tmp_path / "r3", data=(tmp_path / "missing",)))


def test_train_and_eval_options_are_checked_by_their_configs(cache: Path, tmp_path: Path) -> None:
    for kw, words in (
        ({"steps": None}, "--epochs or --steps"),
        ({"steps": 0}, "at least 1"),
        ({"batch_size": 0}, "--batch-size"),
        ({"lr": 0.0}, "--lr"),
        ({"workers": -1}, "--workers"),
        ({"unfreeze_at": 1}, "--freeze-encoder"),
        ({"resume": True, "overwrite": True}, "exclude each other"),
        ({"best_metric": "fid"}, "--best-metric"),
        ({"label_smoothing": 1.0}, "--label-smoothing"),
        ({"soft_sigma": 0.0}, "--soft-sigma"),
        ({"model": "fastcolor-l2", "label_smoothing": 0.1}, "bin models"),
    ):
        with pytest.raises(BadInputError, match=words):
            cfg_for(cache, tmp_path / "r", **kw)
    for kw, words in (({"size": 8}, "--size"), ({"limit": 0}, "--limit"), ({"split": "x"}, "x")):
        with pytest.raises(BadInputError, match=words):
            EvalConfig(inputs=(cache,), **kw)
    with pytest.raises(BadInputError, match="(?i)cuda"):  # as `bttf colorize --device` says
        train(cfg_for(cache, tmp_path / "r4", device="cuda:99"))
    with pytest.raises(BadInputError, match="(?i)cuda"):
        evaluate(EvalConfig(inputs=(cache,), device="cuda:99"))
    assert not (tmp_path / "r4").exists()


def test_model_kwargs_reach_the_checkpoint(cache: Path, tmp_path: Path) -> None:
    from bttf.models import load_model

    train(
        cfg_for(
            cache, tmp_path / "run", model=TINY_AB, loss="l2", steps=1, model_kwargs=(("width", 4),)
        )
    )
    model, _, meta = load_model(tmp_path / "run" / "last.safetensors")
    assert meta["bttf_config"] == {"width": 4} and model.head.in_channels == 4
    assert meta["train_config"]["model_kwargs"] == {"width": 4}


def test_train_prepares_raw_folders(tmp_path: Path) -> None:
    make_images(tmp_path / "raw", 6)
    res = train(
        TrainConfig(
            data=(tmp_path / "raw",),
            model=TINY_AB,
            out=tmp_path / "run",
            steps=2,
            batch_size=2,
            image_size=32,
            loss="l2",
            cache_size=32,
            val_fraction=0.3,
            workers=0,
            threads=1,
        )
    )
    assert D.is_cache(tmp_path / "run" / "cache") and res.steps == 2


def test_cli_train_and_eval(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bttf.cli import main

    main(
        [
            "train",
            str(cache),
            "--model",
            "fastcolor",
            "--out",
            str(tmp_path / "run"),
            "--loss",
            "rebalanced",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--image-size",
            "32",
            "--threads",
            "1",
            "--workers",
            "0",
            "--val-every",
            "1ep",
            "--label-smoothing",
            "0.1",
            "--soft-sigma",
            "8",
        ]
    )
    assert (tmp_path / "run" / "best.safetensors").is_file()
    from bttf.models.weights import read_weights

    config = read_weights(tmp_path / "run" / "best.safetensors")[1]["train_config"]
    assert (config["label_smoothing"], config["soft_sigma"]) == (0.1, 8.0)
    capsys.readouterr()
    main(["eval", str(cache), "--weights", str(tmp_path / "run" / "best.safetensors"), "--json"])
    report = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in report["results"]]
    assert names == ["gray", "fastcolor"]
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                str(cache),
                "--out",
                str(tmp_path / "x"),
                "--steps",
                "1",
                "--image-size",
                "40",
            ]
        )
    assert e.value.code == 2
    assert "--image-size" in capsys.readouterr().err


def test_eval_on_known_inputs(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "gray").mkdir()
    for i in range(2):
        g = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
        cv2.imwrite(str(tmp_path / "gray" / f"g{i}.png"), np.dstack([g, g, g]))
    report = evaluate(EvalConfig(inputs=(tmp_path / "gray",), size=32))
    (gray,) = report.rows
    assert report.images == 2 and gray.metrics["exact"] == 2
    assert math.isinf(gray.metrics["psnr"]) and gray.metrics["ssim"] == pytest.approx(1.0)
    assert gray.metrics["auc"] == pytest.approx(1.0) and gray.metrics["colorfulness"] < 0.05
    assert report.to_dict()["results"][0]["psnr"] == "inf"
    json.dumps(report.to_dict(), allow_nan=False)

    from bttf.models import create_model, save_weights

    with pytest.raises(BadInputError, match="no installed weights"):
        evaluate(EvalConfig(inputs=(tmp_path / "gray",), models=("fastcolor-l2",), size=32))
    torch.manual_seed(0)
    model = create_model("fastcolor", pretrained=False)
    ckpt = save_weights(
        tmp_path / "random.safetensors", model, "fastcolor", {}, extra={"prior": [1 / 313] * 313}
    )
    make_images(tmp_path / "col", 3)
    report = evaluate(EvalConfig(inputs=(tmp_path / "col",), weights=(ckpt,), size=32))
    gray, model = report.rows
    assert 10 < gray.metrics["psnr"] < 60 and 0 < gray.metrics["auc"] < 1
    assert 0 < gray.metrics["auc_rebal"] < gray.metrics["auc"] + 0.2
    assert report.colorfulness_truth > gray.metrics["colorfulness"]
    assert all(math.isfinite(model.metrics[k]) for k in ("psnr", "ssim", "auc", "auc_rebal"))
    # the model at a render size, as `bttf colorize --render-size` runs it: the image's own size
    # changes nothing, a smaller one changes the colours (not the gray baseline)
    same = evaluate(
        EvalConfig(inputs=(tmp_path / "col",), weights=(ckpt,), size=32, render_size=32)
    )
    assert same.rows[1].metrics == model.metrics and same.to_dict()["render_size"] == 32
    small = evaluate(
        EvalConfig(inputs=(tmp_path / "col",), weights=(ckpt,), size=32, render_size=16)
    )
    assert small.rows[0].metrics == gray.metrics and small.rows[1].metrics != model.metrics


@pytest.mark.skipif(sys.platform == "win32", reason="gloo over localhost")
def test_ddp_two_cpu_processes(cache: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "bttf",
        "train",
        str(cache),
        "--model",
        "fastcolor",
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--threads",
        "1",
        "--val-every",
        "2",
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = losses_of(tmp_path / "run")
    assert len(rows) == 2  # one writer: rank 0
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["step"] == 2
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_eval_by_folder_scores_each_folder_alone(tmp_path: Path, capsys) -> None:
    """--by-folder: a report per folder, each the same as scoring that folder alone."""
    import shutil

    make_images(tmp_path / "a", 2)
    make_images(tmp_path / "b", 3)
    both = tmp_path / "both"
    shutil.copytree(tmp_path / "a", both / "a")
    shutil.copytree(tmp_path / "b", both / "b")
    report = evaluate(EvalConfig(inputs=(both,), size=32, by_folder=True))
    assert report.images == 5 and sorted(report.folders) == ["a", "b"]
    for name, n in (("a", 2), ("b", 3)):
        alone = evaluate(EvalConfig(inputs=(tmp_path / name,), size=32))
        assert report.folders[name].images == n
        assert report.folders[name].rows[0].metrics == alone.rows[0].metrics
    assert set(report.to_dict()["folders"]) == {"a", "b"}
    from bttf.cli import main

    main(["eval", str(both), "--size", "32", "--by-folder"])
    out = capsys.readouterr().out
    assert "a: 2 images" in out and "b: 3 images" in out


def test_fastcolor2_grows_from_a_fastcolor_run(cache: Path, tmp_path: Path) -> None:
    """--init with a fastcolor file starts fastcolor2 as that network's function, then trains on."""
    from bttf.models import load_model
    from bttf.models.weights import grow_model

    train(cfg_for(cache, tmp_path / "small", steps=2, val_every=1000))
    small_file = tmp_path / "small" / "last.safetensors"
    small, _, _ = load_model(small_file)
    grown = grow_model("fastcolor2", small_file)
    assert grown is not None and grown.deep is not None
    L = torch.rand(2, 1, 64, 96) * 100
    with torch.no_grad():
        assert torch.equal(grown(L), small(L))  # the extra stage starts at zero
    assert grow_model("fastcolor", small_file) is None  # not a larger model: a plain --init

    train(cfg_for(cache, tmp_path / "big", model="fastcolor2", steps=2, init=str(small_file)))
    big, spec, meta = load_model(tmp_path / "big" / "last.safetensors")
    assert spec.name == "fastcolor2" and meta["bttf_config"]["deep"] == [256, 6]
    assert not torch.equal(big.deep[-1].bn.weight, grown.deep[-1].bn.weight)  # it trained

    # --init pretrained: fastcolor2 ships no weights, so it grows from the shipped fastcolor
    from bttf.models import official_weights

    if official_weights("fastcolor") is None:
        pytest.skip("fastcolor's weights are not installed")
    shipped, _, _ = load_model(official_weights("fastcolor"))
    cfg = cfg_for(cache, tmp_path / "p", model="fastcolor2", steps=1, init="pretrained")
    from bttf.models import get_spec
    from bttf.training.loop import build_model

    with torch.no_grad():
        assert torch.equal(build_model(cfg, get_spec("fastcolor2"))(L), shipped.float()(L))


def test_training_on_no_usable_data_leaves_no_run_folder(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "gray").mkdir()
    cv2.imwrite(str(tmp_path / "gray" / "g.png"), np.full((40, 40, 3), 128, np.uint8))
    with pytest.raises(BadInputError, match="no usable colour images"):
        train(cfg_for(tmp_path / "gray", tmp_path / "run", data=(tmp_path / "gray",)))
    assert not (tmp_path / "run").exists()
