"""`bttf download` and the catalogue of released weights, against a real HTTP server on
127.0.0.1 (never the network): success, wrong hash, a server gone mid-file, an interrupted
download, an existing file kept unless --force, a folder that cannot be written; and what
`--model NAME` / `--init imagenet` do when the file is, or is not, in the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from bttf.cli import main
from bttf.errors import BadInputError, DownloadError, MissingWeightsError, WeightsError
from bttf.models import (
    create_model,
    describe_models,
    get_spec,
    list_models,
    official_weights,
    register_model,
)
from bttf.models.catalogue import (
    BASE_URL_ENV,
    Release,
    checkpoints_dir,
    get_release,
    register_release,
    release_urls,
    unregister_release,
)
from bttf.models.download import download
from bttf.models.resnet18 import load_imagenet_trunk, trunk_keys

TINY = "test-download-tiny"


class TinyAb(nn.Module):
    """A test-only ab model whose released weights the local server serves."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.conv(L / 50.0 - 1.0) * 50.0


if TINY not in list_models():
    register_model(TINY, output="ab", stride=1, render_size=32)(lambda **kw: TinyAb(**kw))


class _Handler(BaseHTTPRequestHandler):
    """GET /NAME: the bytes in server.files; names in server.cut stop half-way (the length
    header still promises the whole file); anything else is a 404."""

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        self.server.hits.append(name)
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if name in self.server.cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.cut, httpd.hits = {}, set(), []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def url_of(httpd: ThreadingHTTPServer, name: str = "") -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/{name}"


@pytest.fixture(autouse=True)
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub of the test's own; no base URL from the environment."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def entry(server: ThreadingHTTPServer) -> Iterator[tuple[Release, bytes]]:
    """The tiny model's "released" weights: served, and in the catalogue with their hash."""
    torch.manual_seed(0)
    buf = _saved(TinyAb().state_dict())
    file = f"tiny-{hashlib.sha256(buf).hexdigest()[:8]}.pth"
    server.files[file] = buf
    release = Release(
        TINY,
        file,
        (url_of(server, file),),
        len(buf),
        hashlib.sha256(buf).hexdigest(),
        "MIT",
        models=(TINY,),
    )
    register_release(release)
    try:
        yield release, buf
    finally:
        unregister_release(TINY)


def _saved(state: dict) -> bytes:
    import io

    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue()


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """The real entry point; (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --- the transfer ------------------------------------------------------------------------------


def test_download_then_the_model_loads_it(entry, hub: Path, capsys) -> None:
    release, buf = entry
    with pytest.raises(MissingWeightsError, match=f"bttf download {TINY}"):
        create_model(TINY)
    assert describe_models(TINY)[0]["weights"] == "not downloaded"

    code, err = run_main(["download", TINY], capsys)
    assert code == 0, err
    assert checkpoints_dir() == hub
    assert leftovers(hub) == [release.file]  # no temporary file beside it
    assert (hub / release.file).read_bytes() == buf
    assert "SHA-256 checked" in err and "MIT" in err

    assert official_weights(TINY) == hub / release.file
    model = create_model(TINY)  # no --weights: the cached file
    expected = torch.load(hub / release.file, weights_only=True)
    assert torch.equal(model.conv.weight, expected["conv.weight"])
    row = describe_models(TINY)[0]  # what `bttf models` shows
    assert row["weights"] == "cached" and row["weights_present"]


def test_base_url_replaces_the_catalogue_url(server, hub: Path, monkeypatch) -> None:
    buf = b"mirror copy " * 1000
    server.files["m.pth"] = buf
    dead = Release("test-mirror", "m.pth", ("http://127.0.0.1:9/m.pth",), len(buf), "0" * 64, "MIT")
    mirrored = dataclasses.replace(dead, sha256=hashlib.sha256(buf).hexdigest())
    monkeypatch.setenv(BASE_URL_ENV, url_of(server, "mirror/"))
    assert release_urls(mirrored) == (url_of(server, "mirror/m.pth"),)
    server.files["mirror/m.pth"] = buf
    result = download(mirrored)
    assert result.fetched and result.path.read_bytes() == buf
    assert server.hits == ["mirror/m.pth"]

    offline = hub.parent / "offline"  # file:// for a copy without a server
    offline.mkdir(parents=True)
    (offline / "m.pth").write_bytes(buf)
    monkeypatch.setenv(BASE_URL_ENV, offline.as_uri())
    result = download(mirrored, force=True)
    assert result.fetched and result.path.read_bytes() == buf and len(server.hits) == 1


def test_progress_reports_bytes_and_total(entry, hub: Path) -> None:
    release, buf = entry
    calls: list[tuple[int, int | None]] = []
    download(release, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, len(buf)) and calls[-1] == (len(buf), len(buf))


def test_a_hash_prefix_is_checked_like_torch_hub(server, hub: Path) -> None:
    buf = os.urandom(50_000)
    server.files["p.pth"] = buf
    digest = hashlib.sha256(buf).hexdigest()
    good = Release("test-prefix", "p.pth", (url_of(server, "p.pth"),), len(buf), digest[:8], "MIT")
    assert not good.full_hash and download(good).fetched
    bad = dataclasses.replace(good, sha256=f"{int(digest[:8], 16) ^ 1:08x}")
    with pytest.raises(DownloadError, match="SHA-256 prefix"):
        download(bad, force=True)
    assert (hub / "p.pth").read_bytes() == buf  # the good file stays


# --- failures leave nothing behind ---------------------------------------------------------------


def test_wrong_hash_keeps_nothing(entry, hub: Path, capsys) -> None:
    release, _ = entry
    register_release(dataclasses.replace(release, sha256="ab" * 32), replace=True)
    code, err = run_main(["download", TINY], capsys)
    assert code == 1 and err.startswith("bttf: error: ") and err.count("\n") == 1, err
    assert "not the released file" in err
    assert leftovers(hub) == []


def test_server_gone_mid_file_keeps_nothing(entry, server, hub: Path, capsys) -> None:
    release, _ = entry
    server.cut.add(release.file)
    code, err = run_main(["download", TINY], capsys)
    assert code == 1 and err.startswith("bttf: error: ") and err.count("\n") == 1, err
    assert "broke off" in err
    assert leftovers(hub) == []


def test_interrupted_download_keeps_nothing(entry, hub: Path) -> None:
    release, _ = entry

    def interrupt(done: int, total: int | None) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download(release, progress=interrupt)
    assert leftovers(hub) == []


def test_refused_and_unreachable_are_one_line(entry, server, hub: Path, capsys) -> None:
    release, _ = entry
    register_release(dataclasses.replace(release, urls=(url_of(server, "gone.pth"),)), replace=True)
    code, err = run_main(["download", TINY], capsys)
    assert code == 1 and "404" in err and err.count("\n") == 1, err

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    register_release(
        dataclasses.replace(release, urls=(f"http://127.0.0.1:{port}/x.pth",)), replace=True
    )
    code, err = run_main(["download", TINY], capsys)
    assert code == 1 and "cannot reach 127.0.0.1" in err and err.count("\n") == 1, err
    assert leftovers(hub) == []


def test_existing_file_is_kept_unless_force(entry, server, hub: Path, capsys) -> None:
    release, buf = entry
    hub.mkdir(parents=True)
    (hub / release.file).write_bytes(b"already here")
    code, err = run_main(["download", TINY], capsys)
    assert code == 0 and "already there" in err
    assert (hub / release.file).read_bytes() == b"already here" and server.hits == []

    code, err = run_main(["download", TINY, "--force"], capsys)
    assert code == 0, err
    assert (hub / release.file).read_bytes() == buf and leftovers(hub) == [release.file]


def test_folder_not_writable_is_one_line(entry, tmp_path: Path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TORCH_HOME", str(blocker / "torch"))
    code, err = run_main(["download", TINY], capsys)
    assert code == 1 and err.startswith("bttf: error: cannot create") and err.count("\n") == 1


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_one_line(entry, hub: Path, capsys) -> None:
    hub.mkdir(parents=True)
    hub.chmod(0o500)
    try:
        code, err = run_main(["download", TINY], capsys)
    finally:
        hub.chmod(0o700)
    assert code == 1 and "cannot write in" in err and err.count("\n") == 1
    assert leftovers(hub) == []


def test_unknown_name_and_no_name_are_usage_errors(capsys) -> None:
    code, err = run_main(["download", "eccv16", "no-such-weights"], capsys)
    assert code == 2 and "no released weights called 'no-such-weights'" in err
    assert "eccv16" in err and "resnet50-imagenet" in err
    code, err = run_main(["download"], capsys)
    assert code == 2 and "or all" in err


# --- the catalogue and the models that need it --------------------------------------------------


def test_catalogue_facts() -> None:
    eccv = get_release("eccv16")
    assert eccv.file == "colorization_release_v2-9b330a0b.pth" and eccv.full_hash
    assert eccv.sha256.startswith("9b330a0b") and eccv.licence == "BSD-2-Clause"
    assert get_release("siggraph17").sha256.startswith("df00044c")
    assert get_release("ddcolor-tiny").wrapper == "params"
    assert get_release("deoldify-video").wrapper == "model"
    for depth, prefix in ((18, "f37072fd"), (50, "0676ba61")):
        tv = get_release(f"resnet{depth}-imagenet")
        assert tv.sha256 == prefix and tv.role == "imagenet" and tv.file.endswith(f"{prefix}.pth")
    with pytest.raises(ValueError, match="already"):
        register_release(eccv)


def test_model_without_weights_names_the_download(gray_png: Path, tmp_path: Path, capsys) -> None:
    """`--model eccv16` with an empty cache: exit 2, one line, the command and the size."""
    out = tmp_path / "o.png"
    code, err = run_main(["colorize", str(gray_png), "-o", str(out), "--model", "eccv16"], capsys)
    assert code == 2 and err.startswith("bttf: error: ") and err.count("\n") == 1, err
    assert "bttf download eccv16" in err and "123.0 MB" in err
    assert not out.exists()
    with pytest.raises(MissingWeightsError, match="bttf download siggraph17"):
        official_weights("siggraph17")
    assert create_model("eccv16", pretrained=False) is not None  # no file needed to build it


def _torchvision_state(depth: int) -> dict[str, torch.Tensor]:
    """A state dict in torchvision's resnetN layout: another model's (randomly initialised)
    trunk, plus the classifier `fc`."""
    state = {k: v.clone() for k, v in trunk_keys(create_model(f"resnet{depth}")).items()}
    width = 512 * (4 if depth == 50 else 1)
    state["fc.weight"] = torch.randn(1000, width) * 0.01
    state["fc.bias"] = torch.zeros(1000)
    return state


def test_train_init_imagenet_uses_the_cached_torchvision_file(server, hub: Path, capsys) -> None:
    from bttf.training.loop import TrainConfig, build_model

    def cfg(model: str) -> TrainConfig:
        return TrainConfig(
            data=(hub,), model=model, out=hub / "run", steps=1, image_size=64, init="imagenet"
        )

    with pytest.raises(MissingWeightsError, match="bttf download resnet18-imagenet"):
        build_model(cfg("resnet18"), get_spec("resnet18"))
    with pytest.raises(BadInputError, match="resnet50"):
        build_model(cfg("unet-ae"), get_spec("unet-ae"))

    state = _torchvision_state(18)
    buf = _saved(state)
    original = get_release("resnet18-imagenet")
    server.files[original.file] = buf
    served = dataclasses.replace(
        original, urls=(url_of(server, original.file),), sha256=hashlib.sha256(buf).hexdigest()[:8]
    )
    register_release(served, replace=True)
    try:
        code, err = run_main(["download", "resnet18-imagenet"], capsys)
        assert code == 0, err
        model = build_model(cfg("resnet18-bins"), get_spec("resnet18-bins"))
    finally:
        register_release(original, replace=True)
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])


def test_resnet50_has_torchvision_keys_and_takes_its_trunk() -> None:
    state = _torchvision_state(50)
    model = load_imagenet_trunk(create_model("resnet50"), state)
    keys = set(trunk_keys(model))
    assert keys == {k for k in state if not k.startswith("fc.")} and len(keys) == 318
    learnt = [k for k in keys if "running" not in k and "num_batches" not in k]
    assert sum(state[k].numel() for k in learnt) == 23_508_032  # torchvision's, without fc
    loaded = model.state_dict()["layer3.5.conv3.weight"]
    assert torch.equal(loaded, state["layer3.5.conv3.weight"])
    assert tuple(state["layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)  # stride on the 3x3
    with torch.inference_mode():
        ab = model.eval()(torch.rand(1, 1, 64, 64) * 100)
    assert ab.shape == (1, 2, 16, 16) and torch.isfinite(ab).all()
    with pytest.raises(WeightsError, match="ResNet-50 trunk"):
        load_imagenet_trunk(model, _torchvision_state(18))
