"""The training batches: which rows each step reads, and their augmentation.

The rows of a step come from the `DistributedSampler` of its epoch (also with one process), the
augmentation from a generator seeded by (seed, step, rank): a batch is a function of the step, so a
resumed run sees the batches the killed one would have.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from bttf.training import data as D
from bttf.training.distributed import Dist

if TYPE_CHECKING:
    from bttf.training.loop import TrainConfig


def seed_of(*parts: int) -> int:
    """A 63-bit seed mixing integers (stable across runs and Python versions)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = ((x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class TrainBatches:
    """Batches for steps [start, total): rows from the sampler of their epoch, augmentation seeded
    by (seed, step, rank). With `workers` > 0, made ahead on a daemon thread (bounded queue)."""

    def __init__(
        self,
        cache: D.LabCache,
        train_rows: np.ndarray,
        cfg: TrainConfig,
        dd: Dist,
        steps_per_epoch: int,
        start: int,
        total: int,
    ):
        from torch.utils.data import DistributedSampler

        self.cache, self.rows, self.cfg, self.dd = cache, train_rows, cfg, dd
        self.spe, self.start, self.total = steps_per_epoch, start, total
        self.sampler = DistributedSampler(
            range(len(train_rows)),
            num_replicas=dd.world,
            rank=dd.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.aug = D.make_augment(cfg.augment)
        self._epoch, self._order = -1, np.zeros(0, np.int64)
        self._q: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def make(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.spe)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._order = np.fromiter(iter(self.sampler), np.int64)
            self._epoch = epoch
        b = self.cfg.batch_size
        rows = self.rows[self._order[i * b : (i + 1) * b]]
        L_u8, ab_u8 = self.cache.read(rows)
        g = torch.Generator().manual_seed(seed_of(self.cfg.seed, step, self.dd.rank))
        return D.augment_batch(
            torch.from_numpy(L_u8), torch.from_numpy(ab_u8), self.cfg.image_size, g, self.aug
        )

    def _work(self) -> None:
        try:
            for step in range(self.start, self.total):
                item = self.make(step)
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised on the training thread
            self._error = e
            self._q.put(None)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.cfg.workers <= 0:
            for step in range(self.start, self.total):
                yield self.make(step)
            return
        self._q = queue.Queue(maxsize=max(2, 2 * self.cfg.workers))
        self._thread = threading.Thread(target=self._work, name="bttf-batches", daemon=True)
        self._thread.start()
        try:
            for _ in range(self.start, self.total):
                item = self._q.get()
                if item is None:
                    raise self._error  # type: ignore[misc]
                yield item
        finally:
            self._stop.set()
            self._thread.join()
