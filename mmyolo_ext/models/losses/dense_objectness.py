"""Rows and mean objectness softplus of a head's outputs, with a single
gradient buffer per level."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from ..float32_region import float32_region
from ..task_modules.assigners.ota_core import GridCells, gather_level_cells


_HALF_TYPES = (torch.float16, torch.bfloat16)


def _at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is a half type (mixed precision), else as is."""
    return x.float() if x.dtype in _HALF_TYPES else x


class _RowsAndObjectness(torch.autograd.Function):
    """Autograd of :func:`rows_and_objectness`.

    Written as one function so that the backward pass fills one gradient
    tensor per level, laid out like the prediction (a permuted view's
    gradient is then a plain view of the convolution output's), instead of
    one full-size tensor per use plus their sum and a transposing copy.

    Mixed precision: both passes run with autocast off (as
    ``torch.amp.custom_fwd`` / ``custom_bwd`` would arrange, for any device
    type); half-precision rows and objectness are cast to float32 after
    they are gathered (exact), and the gradients are summed in float32 and
    returned in the predictions' dtype (one rounding).
    """

    @staticmethod
    @float32_region()
    def forward(ctx: FunctionCtx, level_cells: List[Tuple[Tensor, ...]],
                *preds: Tensor) -> Tuple[Tensor, Tensor]:
        ctx.level_cells = level_cells
        ctx.save_for_backward(*preds)
        rows = _at_least_float32(
            torch.cat([
                gather_level_cells(pred, *where)
                for pred, where in zip(preds, level_cells)
            ]))
        obj = [_at_least_float32(pred[..., 4]) for pred in preds]
        obj_mean = torch.stack([F.softplus(o).mean() for o in obj])
        return rows, obj_mean

    @staticmethod
    @once_differentiable
    @float32_region()
    def backward(ctx: FunctionCtx, grad_rows: Tensor,
                 grad_obj_mean: Tensor) -> Tuple[Optional[Tensor], ...]:
        grads = []
        start = 0
        for pred, where, grad_mean in zip(ctx.saved_tensors, ctx.level_cells,
                                          grad_obj_mean.unbind()):
            # zeros_like keeps the prediction's strides; half-precision
            # gradients are summed in float32 and rounded once
            grad = torch.zeros_like(
                pred,
                dtype=torch.float32 if pred.dtype in _HALF_TYPES else None)
            obj = pred[..., 4]
            # d mean(softplus(x)) / dx = sigmoid(x) / numel
            grad[..., 4] = torch.sigmoid(_at_least_float32(obj)).mul_(
                grad_mean / obj.numel())
            num_rows = where[0].numel()
            if num_rows:
                grad.index_put_(where,
                                grad_rows[start:start + num_rows].to(
                                    grad.dtype),
                                accumulate=True)
            start += num_rows
            grads.append(grad.to(pred.dtype))
        return (None, *grads)


def rows_and_objectness(preds: Sequence[Tensor],
                        cells: GridCells) -> Tuple[Tensor, Tensor]:
    """The channel vectors of a head's predictions at the given cells, and
    per level the mean over all cells of ``softplus(objectness)`` (the
    objectness BCE against an all-zero target).

    Args:
        preds (Sequence[Tensor]): Per level ``(bs, na, ny, nx, 5 + nc)`` raw
            predictions.
        cells (GridCells): Cells, grouped by level.

    Returns:
        tuple[Tensor, Tensor]: ``(k, 5 + nc)`` rows in the cells' order and
        the ``(nl,)`` means (both at least float32). Both are differentiable
        w.r.t. ``preds``; the gradient of a level is built in a single tensor
        with its prediction's strides.
    """
    return _RowsAndObjectness.apply(cells.level_cells(len(preds)), *preds)
