"""The Lab training cache: `bttf prepare`, its split, skips and errors, and augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bttf.errors import BadInputError, OutputExistsError
from bttf.training import data as D


def make_images(
    folder: Path, n: int, size: tuple[int, int] = (48, 64), seed: int = 0
) -> list[Path]:
    """`n` colourful PNGs (gradients between two random colours plus a disc) in `folder`."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    paths = []
    for i in range(n):
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = (np.arange(w) / w)[None, :, None]
        img = np.broadcast_to(c1 * (1 - t) + c2 * t, (h, w, 3)).astype(np.uint8).copy()
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(img, (int(rng.integers(w // 4, 3 * w // 4)), h // 2), h // 4, colour, -1)
        p = folder / f"img{i:02d}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def write_video(path: Path, frames: list[np.ndarray], fps: int = 24) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_prepare_writes_a_compact_cache(tmp_path: Path) -> None:
    make_images(tmp_path / "photos", 6)
    make_images(tmp_path / "photos" / "sub", 4, seed=1)
    s = D.prepare(
        D.PrepareConfig(
            inputs=(tmp_path / "photos",), out=tmp_path / "cache", size=32, val_fraction=0.3
        )
    )
    assert (s.train + s.val, s.files, s.unreadable, s.grayscale) == (10, 10, 0, 0)
    assert s.val >= 1
    cache = D.LabCache(tmp_path / "cache")
    assert cache.L.shape == (10, 32, 32) and cache.L.dtype == np.uint8
    assert cache.ab.shape == (10, 2, 32, 32) and cache.ab.dtype == np.uint8
    assert isinstance(cache.L, np.memmap)
    names = [it["name"] for it in cache.items]
    assert "sub/img00.png" in names and names == sorted(names)
    assert len(cache.indices("train")) == s.train and len(cache.indices("val")) == s.val
    L_u8, ab_u8 = cache.read([0, 1])
    L, ab = D.decode_l(torch.from_numpy(L_u8)).unsqueeze(1), D.decode_ab(torch.from_numpy(ab_u8))
    assert L.shape == (2, 1, 32, 32) and 0 <= float(L.min()) and float(L.max()) <= 100
    assert ab.shape == (2, 2, 32, 32) and float(ab.abs().max()) > 10


def test_cache_values_match_rgb_to_lab(tmp_path: Path) -> None:
    import cv2

    from bttf.color import rgb_to_lab

    (p,) = make_images(tmp_path / "x", 1, size=(32, 32))
    D.prepare(D.PrepareConfig(inputs=(p,), out=tmp_path / "c", size=32, val_fraction=0.0))
    rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
    lab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    L_u8, ab_u8 = D.LabCache(tmp_path / "c").read([0])
    L, ab = D.decode_l(torch.from_numpy(L_u8)).unsqueeze(1), D.decode_ab(torch.from_numpy(ab_u8))
    assert float((L[0] - lab[:1]).abs().max()) <= 0.2 + 1e-4  # half a uint8 step of L * 2.55
    assert float((ab[0] - lab[1:]).abs().max()) <= 0.5 + 1e-4


def test_split_is_seeded_and_stable_when_files_are_added(tmp_path: Path) -> None:
    make_images(tmp_path / "a", 20)
    cfg = D.PrepareConfig(
        inputs=(tmp_path / "a",), out=tmp_path / "c1", size=16, val_fraction=0.3, seed=3
    )
    D.prepare(cfg)
    D.prepare(D.PrepareConfig(**{**cfg.__dict__, "out": tmp_path / "c2"}))
    split1 = {it["name"]: it["split"] for it in D.LabCache(tmp_path / "c1").items}
    split2 = {it["name"]: it["split"] for it in D.LabCache(tmp_path / "c2").items}
    assert split1 == split2 and "val" in split1.values() and "train" in split1.values()
    make_images(tmp_path / "a" / "more", 5, seed=9)
    D.prepare(D.PrepareConfig(**{**cfg.__dict__, "out": tmp_path / "c3"}))
    split3 = {it["name"]: it["split"] for it in D.LabCache(tmp_path / "c3").items}
    assert {k: split3[k] for k in split1} == split1
    D.prepare(D.PrepareConfig(**{**cfg.__dict__, "out": tmp_path / "c4", "seed": 4}))
    split4 = {it["name"]: it["split"] for it in D.LabCache(tmp_path / "c4").items}
    assert {k: split4[k] for k in split1} != split1


def test_prepare_skips_unreadable_and_grayscale_files(tmp_path: Path) -> None:
    import cv2

    make_images(tmp_path / "d", 3)
    (tmp_path / "d" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "d" / "empty.png").write_bytes(b"")
    (tmp_path / "d" / "clip.mp4").write_bytes(b"nope")
    gray = np.repeat(np.linspace(0, 255, 48 * 48).reshape(48, 48, 1), 3, 2).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "d" / "gray.png"), gray)
    s = D.prepare(D.PrepareConfig(inputs=(tmp_path / "d",), out=tmp_path / "c", size=16))
    assert (s.total, s.unreadable, s.grayscale) == (3, 3, 1)
    assert any("broken.jpg" in f for f in s.skipped_files)
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert index["summary"]["unreadable"] == 3


def test_empty_dataset_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images or videos"):
        D.prepare(D.PrepareConfig(inputs=(tmp_path / "empty",), out=tmp_path / "c"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="no usable colour images"):
        D.prepare(D.PrepareConfig(inputs=(tmp_path / "bad",), out=tmp_path / "c"))
    assert not (tmp_path / "c" / "index.json").exists()
    with pytest.raises(BadInputError, match="not a bttf cache"):
        D.LabCache(tmp_path / "bad")


def test_existing_cache_needs_overwrite(tmp_path: Path) -> None:
    make_images(tmp_path / "d", 2)
    cfg = D.PrepareConfig(inputs=(tmp_path / "d",), out=tmp_path / "c", size=16)
    D.prepare(cfg)
    with pytest.raises(OutputExistsError):
        D.prepare(cfg)
    D.prepare(D.PrepareConfig(**{**cfg.__dict__, "overwrite": True}))


def test_video_frames_are_sampled_and_duplicates_skipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    moving = []
    for i in range(24):
        f = np.zeros((48, 64, 3), np.uint8)
        f[..., 0] = 40 + 8 * i
        f[..., 2] = 200 - 6 * i
        f[10:30, (2 * i) % 40 : (2 * i) % 40 + 20, 1] = 220
        moving.append(f)
    (tmp_path / "v").mkdir()
    write_video(tmp_path / "v" / "moving.mp4", moving)
    still = [np.broadcast_to(rng.integers(0, 256, (1, 1, 3)), (48, 64, 3)).astype(np.uint8)] * 24
    write_video(tmp_path / "v" / "still.mp4", still)
    s = D.prepare(
        D.PrepareConfig(
            inputs=(tmp_path / "v",), out=tmp_path / "c", size=32, frame_step=4, val_fraction=0.5
        )
    )
    assert s.videos == 2 and s.unreadable == 0
    cache = D.LabCache(tmp_path / "c")
    frames = {}
    for it in cache.items:
        frames.setdefault(it["name"], []).append(it["frame"])
    assert frames["moving.mp4"] == [0, 4, 8, 12, 16, 20]
    assert frames["still.mp4"] == [0] and s.duplicate_frames == 5
    # every frame of a video lands in the same split
    for name in frames:
        assert len({it["split"] for it in cache.items if it["name"] == name}) == 1


def test_augment_batch_shapes_ranges_and_determinism() -> None:
    g = torch.Generator().manual_seed(0)
    L_u8 = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=g)
    ab_u8 = torch.randint(60, 200, (3, 2, 40, 40), dtype=torch.uint8, generator=g)
    a = D.augment_batch(L_u8, ab_u8, 16, torch.Generator().manual_seed(5))
    b = D.augment_batch(L_u8, ab_u8, 16, torch.Generator().manual_seed(5))
    c = D.augment_batch(L_u8, ab_u8, 16, torch.Generator().manual_seed(6))
    assert a[0].shape == (3, 1, 16, 16) and a[1].shape == (3, 2, 16, 16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert float(a[0].min()) >= 0 and float(a[0].max()) <= 100
    assert float(a[1].abs().max()) <= 128
    L, ab = D.augment_batch(L_u8, ab_u8, 20, torch.Generator(), None)
    ref = torch.nn.functional.avg_pool2d(D.decode_ab(ab_u8), 2)
    assert torch.allclose(ab, ref, atol=1e-4) and L.shape == (3, 1, 20, 20)


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bttf.cli import main

    make_images(tmp_path / "d", 3)
    main(["prepare", str(tmp_path / "d"), "-o", str(tmp_path / "c"), "--size", "16"])
    assert D.is_cache(tmp_path / "c")
    assert "skipped 0 unreadable" in capsys.readouterr().err.replace("\n", " ")
    (tmp_path / "e").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["prepare", str(tmp_path / "e"), "-o", str(tmp_path / "c2")])
    assert e.value.code == 2
    assert "bttf: error: no images or videos" in capsys.readouterr().err


def test_film_augment_touches_the_gray_input_only_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    L_u8 = torch.from_numpy(rng.integers(0, 256, (6, 64, 64), dtype=np.uint8))
    ab_u8 = torch.from_numpy(rng.integers(0, 256, (6, 2, 64, 64), dtype=np.uint8))
    film = D.make_augment("film")
    assert film is not None and film.film > 0
    assert D.make_augment(True) == D.Augment() and D.make_augment(False) is None
    with pytest.raises(ValueError):
        D.make_augment("sepia")
    L0, ab0 = D.augment_batch(L_u8, ab_u8, 48, torch.Generator().manual_seed(3), D.Augment())
    L1, ab1 = D.augment_batch(L_u8, ab_u8, 48, torch.Generator().manual_seed(3), film)
    L2, ab2 = D.augment_batch(L_u8, ab_u8, 48, torch.Generator().manual_seed(3), film)
    assert torch.equal(ab0, ab1) and torch.equal(L1, L2) and torch.equal(ab1, ab2)  # seeded
    assert L1.shape == L0.shape and torch.isfinite(L1).all()
    assert float(L1.min()) >= 0 and float(L1.max()) <= 100
    assert not torch.equal(L0, L1)  # the input is degraded, the target is the same


def test_film_degrade_effects() -> None:
    L = torch.full((64, 1, 32, 32), 50.0)
    out = D.film_degrade(L, torch.Generator().manual_seed(0), p=1.0)
    assert out.shape == L.shape and float(out.min()) >= 0 and float(out.max()) <= 100
    assert float((out - L).abs().amax(dim=(1, 2, 3)).gt(0.5).float().mean()) > 0.9
    same = D.film_degrade(L, torch.Generator().manual_seed(0), p=0.0)
    assert torch.equal(same, L)
    # JPEG blocking of a smooth ramp stays close; the blur keeps a constant image constant.
    ramp = torch.linspace(0, 100, 32).view(1, 1, 1, 32).expand(2, 1, 32, 32).contiguous()
    j = D.jpeg_blocks(ramp, torch.tensor([0.5, 2.0]))
    assert float((j - ramp).abs().mean()) < 3
    assert torch.allclose(D.gaussian_blur(L[:2], torch.tensor([0.5, 1.5])), L[:2], atol=1e-4)


def test_a_failed_prepare_leaves_no_folders_behind(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "gray").mkdir()
    gray = np.repeat(np.linspace(0, 255, 48 * 48).reshape(48, 48, 1), 3, 2).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gray" / "g.png"), gray)
    with pytest.raises(BadInputError, match="no usable colour images"):
        D.prepare(D.PrepareConfig(inputs=(tmp_path / "gray",), out=tmp_path / "run" / "cache"))
    assert not (tmp_path / "run").exists()  # the folders it made are gone
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(BadInputError):
        D.prepare(D.PrepareConfig(inputs=(tmp_path / "gray",), out=tmp_path / "mine" / "c"))
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
