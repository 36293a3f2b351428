"""How long loading a released model takes: building it, and reading its `.pth`.

Two measurements, each step in a fresh interpreter (one-off costs such as lazy imports count, as
they do for `bttf colorize`); the page cache is warm (the file was just written or read):

  build   CPU seconds of `spec.factory()` with random init (what loading did before) against the
          same on the meta device (what `create_model(name, weights=...)` does now)
  read    a file of the released size and wrapper made from random weights (never the released
          weights; speed does not depend on their values), read three ways:
            pickle   `torch.load(weights_only=True)` alone (the restricted unpickler where that
                     refuses the file: DeOldify's wrapper)
            before   what `create_model(name, weights=FILE)` did before the converted copy and
                     the meta build: random init, unpickling, copying the tensors in
            first    `create_model(name, weights=FILE)` with an empty weights cache: SHA-256 of
                     the source, unpickling, the converted copy written and hashed, meta build
            again    the same call once the copy exists: source stat, SHA-256 of the copy,
                     safetensors read, meta build

    python benchmarks/load_speed.py --build deoldify-stable ddcolor --read ddcolor-tiny --json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The released files' names and wrappers (bttf.models.catalogue), by model.
WRAPPERS = {"deoldify": "model", "ddcolor": "params"}


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def step(kind: str, name: str, path: str) -> dict:
    """One measurement in this process: (wall s, CPU s, peak MiB)."""
    import torch

    from bttf.models import create_model, get_spec, load_state_into
    from bttf.models.safe_pickle import restricted_load, state_dict_of

    spec = get_spec(name)
    t0, c0 = time.perf_counter(), cpu_s()
    if kind == "random":
        spec.factory()
    elif kind == "meta":
        with torch.device("meta"):
            spec.factory()
    elif kind in ("pickle", "before"):  # weights_only, else the restricted unpickler
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            obj = restricted_load(path)
        if kind == "before":
            load_state_into(spec.factory(), state_dict_of(obj, path, tuple(WRAPPERS.values())))
    elif kind == "write":  # not timed: the file, made in a process of its own (peak memory)
        print(write_release_like(name, Path(path)))
    else:  # first, again
        create_model(name, weights=path)
    return {
        "wall_s": round(time.perf_counter() - t0, 3),
        "cpu_s": round(cpu_s() - c0, 3),
        "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def spawn(kind: str, name: str, path: Path | None = None, cache: Path | None = None) -> dict:
    env = dict(os.environ)
    if cache is not None:
        env["BTTF_CACHE_DIR"] = str(cache)
    cmd = [sys.executable, __file__, "--step", kind, name, str(path or "")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def write_release_like(name: str, folder: Path) -> Path:
    """`name`'s random weights in its released file name and wrapper (DeOldify's: fastai's
    legacy-format pickle with an optimizer entry naming functools.partial)."""
    import torch

    from bttf.models import create_model
    from bttf.models.catalogue import release_for_model

    release = release_for_model(name)
    torch.manual_seed(0)
    state = create_model(name, pretrained=False).state_dict()
    path = folder / release.file
    if name.startswith("deoldify"):
        opt = {"opt_func": functools.partial(torch.optim.Adam, betas=(0.9, 0.99))}
        torch.save({"model": state, "opt": opt}, path, _use_new_zipfile_serialization=False)
    else:
        torch.save({"params": state}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", nargs="*", default=[], help="models whose build is timed")
    parser.add_argument("--read", nargs="*", default=[], help="models whose file read is timed")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each step (min is kept)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--step", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(*args.step)))
        return
    rows = []
    for name in args.build:
        for kind in ("random", "meta"):
            runs = [spawn(kind, name) for _ in range(args.repeat)]
            rows.append({"model": name, "step": f"build {kind}", **min(runs, key=cpu_of)})
            report(rows[-1], args.json)
    for name in args.read:
        with tempfile.TemporaryDirectory(prefix="bttf-load-speed-") as tmp:
            cmd = [sys.executable, __file__, "--step", "write", name, tmp]
            made = subprocess.run(cmd, capture_output=True, text=True, check=True)
            path = Path(made.stdout.strip().splitlines()[-2])
            size = {"file_mb": round(path.stat().st_size / 1e6, 1)}
            for kind in ("pickle", "before"):
                rows.append({"model": name, "step": kind, **size, **spawn(kind, name, path)})
                report(rows[-1], args.json)
            for i in range(args.repeat):
                cache = Path(tmp) / f"cache{i}"
                for kind in ("first", "again"):
                    run = spawn(kind, name, path, cache)
                    rows.append({"model": name, "step": kind, **size, **run})
                    report(rows[-1], args.json)
    if args.json:
        print(json.dumps(rows, indent=2))


def cpu_of(row: dict) -> float:
    return row["cpu_s"]


def report(row: dict, quiet: bool) -> None:
    if not quiet:
        print(
            f"{row['model']:<18}{row['step']:<14}{row['wall_s']:>8.2f} s wall{row['cpu_s']:>8.2f} s "
            f"CPU  peak {row['peak_mib']:>6,} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
