"""Interlaced films coloured field by field: split, colorize, weave.

An interlaced frame holds two pictures taken 1/50 or 1/60 s apart: the top field (rows 0, 2,
4 …) and the bottom field (rows 1, 3, 5 …). Coloured as one picture, anything that moves
between them is seen twice, and its colour smears over both places. Here each frame is split
into its fields, in the order they are shown (the source's field order: top first for `tt` and
`bt`, bottom first for `bb` and `tb`):

- `FieldPreparer`: each field's luma, stretched back to the frame's render size (the model
  sees the picture's own shape), and at the field's chroma plane size; a `PreparedFrame` whose
  `small` is (2, h, w) and `chroma` (2, ch', cw), first field first;
- the model and the stabilizer then see the film's fields as a sequence at twice the frame
  rate (`stages.model_input` flattens them), so the stabilizer follows the motion field to
  field;
- `FieldChroma`: each field's Cb/Cr planes at its own size, woven back into the frame's chroma
  rows (an interlaced frame's chroma rows alternate between the fields as its luma rows do).

The output's luma is the source's own, as always; only the chroma is built per field.
"""

from __future__ import annotations

import numpy as np

from bttf.pipeline.bars import Bars
from bttf.pipeline.decode import SourceFrame, VideoInfo
from bttf.pipeline.stages import ChromaStage, PreparedFrame, Preparer, resize_plane


def by_fields(info: VideoInfo, fields: bool | None) -> bool:
    """Whether a run colours field by field: `fields` when given, else when interlaced."""
    return info.interlaced if fields is None else fields


def field_rows(height: int, top_first: bool) -> tuple[slice, slice]:
    """The rows of the first and the second field of a picture `height` rows high."""
    top, bottom = slice(0, height, 2), slice(1, height, 2)
    return (top, bottom) if top_first else (bottom, top)


class FieldPreparer(Preparer):
    """SourceFrame -> PreparedFrame of its two fields, first field first: `small` (2, h, w) at
    the frame's render size, upright; `chroma` (2, ch', cw), ch' the top field's chroma rows."""

    def __init__(
        self,
        info: VideoInfo,
        render_hw: tuple[int, int],
        rotate_k: int,
        chroma_hw: tuple[int, int],
        top_first: bool,
        bars: Bars | None = None,
    ) -> None:
        super().__init__(info, render_hw, rotate_k, chroma_hw, bars)
        self.rows = field_rows(info.height, top_first)
        self.field_chroma_hw = (-(-chroma_hw[0] // 2), chroma_hw[1])  # the top field's, the larger

    def __call__(self, f: SourceFrame) -> PreparedFrame:
        y = self.luma(f)
        seen = self.model_luma(y)
        small, chroma = [], []
        for rows in self.rows:
            s = self.lut[resize_plane(np.ascontiguousarray(seen[rows]), self.render_hw)]
            small.append(np.rot90(s, self.rotate_k) if self.rotate_k else s)
            field = np.ascontiguousarray(y[rows])
            chroma.append(self.lut[resize_plane(field, self.field_chroma_hw)])
        return PreparedFrame(f, np.ascontiguousarray(np.stack(small)), np.stack(chroma))


class FieldChroma:
    """ab of each field (2N, 2, h', w'), first field first -> Cb, Cr planes (N, ch, cw) of the
    frames: each field's planes by `chroma` at its own size, woven into the frame's rows."""

    def __init__(self, chroma: ChromaStage, chroma_height: int, top_first: bool) -> None:
        self.chroma = chroma
        self.rows = field_rows(chroma_height, top_first)
        self.height = chroma_height

    def __call__(self, batch: list[PreparedFrame], ab) -> tuple[np.ndarray, np.ndarray]:
        fields = [PreparedFrame(p.frame, p.small[i], p.chroma[i]) for p in batch for i in (0, 1)]
        cb, cr = self.chroma(fields, ab)
        return self.weave(cb), self.weave(cr)

    def close(self) -> None:
        """Close the wrapped stage (its keyframe guide's thread and decoder)."""
        self.chroma.close()

    def weave(self, planes: np.ndarray) -> np.ndarray:
        """(2N, ch', cw) planes of fields, first field first -> (N, ch, cw) of frames."""
        n = len(planes) // 2
        out = np.empty((n, self.height, planes.shape[-1]), planes.dtype)
        for i, rows in enumerate(self.rows):
            dst = out[:, rows]
            dst[:] = planes[i::2, : dst.shape[1]]
        return out
