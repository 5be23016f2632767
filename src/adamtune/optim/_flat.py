"""Member-major flat storage: K stacked tensors' members side by side in one [K, P] buffer.

Member k of every stacked tensor then lies in row k, one contiguous block, so an optimizer
treats all of a member's parameters as one tensor: torch's fused kernel gets one row per member
instead of one slice per tensor, the stacked kernels run once over the buffer instead of once
per tensor, and a clipping scale is a single multiply. Each tensor keeps its own layout inside
the row (a weight stored transposed stays transposed), so gradients that arrive in that layout
are added, not transposed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class FlatLayout:
    """Where each stacked tensor lives in a [K, P] buffer: its columns and its inner strides.

    Args:
        tensors: stacked tensors [K, ...], one device and dtype.
        first: one bool per tensor; those marked True take the leading columns (``split`` of
            them), so a group such as "decayed" is one column range.
    """

    def __init__(self, tensors: Sequence[Tensor], first: Sequence[bool]) -> None:
        self.shapes = [tuple(t.shape[1:]) for t in tensors]
        self.offsets = [0] * len(tensors)
        self.strides: list[tuple[int, ...]] = []
        for t in tensors:
            # The member slice's own memory order (outermost first), kept inside the row.
            inner = sorted(range(1, t.ndim), key=lambda d: (-t.stride(d), d))
            stride = [0] * t.ndim
            step = 1
            for d in reversed(inner):
                stride[d] = step
                step *= t.shape[d]
            self.strides.append(tuple(stride[1:]))
        column = 0
        for group in (True, False):
            for i, t in enumerate(tensors):
                if bool(first[i]) == group:
                    self.offsets[i] = column
                    column += math.prod(t.shape[1:])
            if group:
                self.split = column
        self.width = column

    def views(self, flat: Tensor) -> list[Tensor]:
        """Each tensor's view of ``flat`` ([K, width]), shaped [K, ...]."""
        k = flat.shape[0]
        return [
            flat.as_strided((k, *shape), (self.width, *stride), flat.storage_offset() + offset)
            for shape, stride, offset in zip(self.shapes, self.strides, self.offsets, strict=True)
        ]

    def aliases(self, flat: Tensor) -> list[Tensor]:
        """Like :meth:`views`, but tensors of their own that share ``flat``'s memory.

        Not autograd views of ``flat``, so each has its own version counter: an in-place write
        into one moves its counter only, and writes through ``flat`` move none of them.
        """
        storage, k = flat.untyped_storage(), flat.shape[0]
        return [
            torch.empty(0, dtype=flat.dtype, device=flat.device).set_(
                storage, flat.storage_offset() + offset, (k, *shape), (self.width, *stride)
            )
            for shape, stride, offset in zip(self.shapes, self.strides, self.offsets, strict=True)
        ]

    def pack(self, tensors: Sequence[Tensor]) -> Tensor:
        """A new [K, width] buffer holding the values of ``tensors``."""
        first = tensors[0]
        flat = torch.empty(first.shape[0], self.width, dtype=first.dtype, device=first.device)
        for view, t in zip(self.views(flat), tensors, strict=True):
            view.copy_(t.detach())
        return flat

    def adopt(self, tensors: Sequence[Tensor], flat: Tensor) -> None:
        """Make each of ``tensors`` (same objects, e.g. leaf parameters) a view of ``flat``.

        Call under ``torch.no_grad()``; values are whatever ``flat`` holds.
        """
        storage, k = flat.untyped_storage(), flat.shape[0]
        for t, shape, stride, offset in zip(tensors, self.shapes, self.strides, self.offsets, strict=True):
            t.set_(storage, flat.storage_offset() + offset, (k, *shape), (self.width, *stride))

    def columns(self, flat: Tensor, grouped: bool) -> list[Tensor]:
        """``flat`` as its column groups: [first, rest] (empty ones left out), or [flat]."""
        if not grouped:
            return [flat]
        return [c for c in (flat[:, : self.split], flat[:, self.split:]) if c.shape[1]]

    def column_groups(self, grouped: bool) -> list[bool]:
        """Whether each of :meth:`columns`' tensors is the ``first`` group."""
        if not grouped:
            return [True]
        return [g for g, n in ((True, self.split), (False, self.width - self.split)) if n]
