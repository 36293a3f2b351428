"""Where and how torch runs: one place for the engine, evaluation and training.

- `resolve_device`: `--device` (auto | cpu | cuda | cuda:N | mps) -> a usable torch.device, with
  one-line errors for a device this machine does not have.
- `torch_threads`: the CPU thread count for a run, restored afterwards.
- `autocast_dtype`: the reduced precision a device runs a model in (bf16/fp16 on CUDA, bf16 on
  a CPU that multiplies it natively), or None.
- `is_oom`: whether an exception is a device running out of memory.
- `share_heap`, `trim_heap`: the C heap's arena and free pages (glibc), for long streaming runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

import torch

from bttf.errors import BadInputError


def resolve_device(name: str) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` | `mps` -> a usable torch.device, else BadInputError."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise BadInputError(f"--device {name!r} is not a device; use auto, cpu or cuda[:N]") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError("CUDA is not available here; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BadInputError(
                f"there is no {name} (this machine has {torch.cuda.device_count()} CUDA devices)"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise BadInputError("MPS is not available here; use --device cpu (or auto)")
    elif dev.type != "cpu":
        raise BadInputError(f"--device {name!r} is not supported; use auto, cpu or cuda[:N]")
    return dev


@contextlib.contextmanager
def torch_threads(device: torch.device, threads: int | None) -> Iterator[None]:
    """On CPU, run torch with `threads` (default: all cores but one), then restore."""
    if device.type != "cpu" or (threads is None and os.environ.get("OMP_NUM_THREADS")):
        yield
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    old = torch.get_num_threads()
    torch.set_num_threads(threads or max(1, cores - 1))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cpu_autocast_dtype() -> torch.dtype | None:
    """torch.bfloat16 when this CPU multiplies bf16 natively (AMX or AVX512-BF16), else None.

    Elsewhere bf16 is emulated and slower than float32. The development machine has neither,
    so this path's speed-up is not measured yet (benchmarks/README.md).
    """
    probes = [
        getattr(getattr(torch, "cpu", None), name, None)
        for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    ]
    with contextlib.suppress(Exception):  # private probes: any failure means "no"
        if any(fn is not None and fn() for fn in probes):
            return torch.bfloat16
    return None


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype models run in under autocast on `device`, or None for float32.

    CUDA: bfloat16 where supported, else float16. CPU: `cpu_autocast_dtype()`.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return cpu_autocast_dtype()
    return None


def is_oom(e: BaseException) -> bool:
    """Whether `e` is a device running out of memory (CUDA's error, or its older RuntimeError)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(e, oom) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def _load_libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


_LIBC = _load_libc() if sys.platform.startswith("linux") else None
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def share_heap() -> None:
    """Make threads started from now on share the C heap's one arena (glibc's M_ARENA_MAX).

    By default glibc gives each new thread a malloc arena of its own. The engine's threads
    (decode, model, stabilizer, chroma, encode) each allocate and free tens of MB a batch, and
    free pages stranded in several arenas made the peak resident size creep up with the film's
    length: 743-864 MiB for 3000 frames at 360p against 695 MiB with one arena, at the same
    speed (benchmarks/README.md, "Memory"). Process-wide, as the heap is; called by
    the engine.
    """
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, 1)


# Batches between two `trim_heap` calls on the CPU.
TRIM_EVERY = 8


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim), every
    TRIM_EVERY batches: a call takes ~18 ms, and the pages it returns fault back in when reused."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
