"""Rows and mean objectness softplus of one head output, with a single
gradient buffer."""
from typing import Tuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from ..task_modules.assigners.ota_core import gather_level_cells


def _at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is a half type (mixed precision), else as is."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _RowsAndObjectness(torch.autograd.Function):
    """Autograd of :func:`rows_and_objectness`.

    Written as one function so that the backward pass fills one gradient
    tensor, laid out like the prediction (a permuted view's gradient is then
    a plain view of the convolution output's), instead of one full-size
    tensor per use plus their sum and a transposing copy.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, pred: Tensor, image: Tensor, anchor: Tensor,
                grid_y: Tensor, grid_x: Tensor) -> Tuple[Tensor, Tensor]:
        ctx.save_for_backward(pred, image, anchor, grid_y, grid_x)
        rows = gather_level_cells(pred, image, anchor, grid_y, grid_x)
        obj_mean = torch.nn.functional.softplus(_at_least_float32(
            pred[..., 4])).mean()
        return rows, obj_mean

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_rows: Tensor,
                 grad_obj_mean: Tensor) -> Tuple[Tensor, None, None, None,
                                                 None]:
        pred, image, anchor, grid_y, grid_x = ctx.saved_tensors
        # zeros_like keeps the prediction's strides
        grad = torch.zeros_like(pred)
        obj = pred[..., 4]
        # d mean(softplus(x)) / dx = sigmoid(x) / numel
        grad[..., 4] = torch.sigmoid(_at_least_float32(obj)).mul_(
            grad_obj_mean / obj.numel()).to(grad.dtype)
        if image.numel():
            grad.index_put_((image, anchor, grid_y, grid_x),
                            grad_rows.to(grad.dtype),
                            accumulate=True)
        return grad, None, None, None, None


def rows_and_objectness(pred: Tensor, image: Tensor, anchor: Tensor,
                        grid_y: Tensor,
                        grid_x: Tensor) -> Tuple[Tensor, Tensor]:
    """The channel vectors of one level's predictions at the given cells and
    the mean over all cells of ``softplus(objectness)`` (the objectness BCE
    against an all-zero target).

    Args:
        pred (Tensor): ``(bs, na, ny, nx, 5 + nc)`` raw predictions.
        image, anchor, grid_y, grid_x (Tensor): ``(k,)`` int64 cells.

    Returns:
        tuple[Tensor, Tensor]: ``(k, 5 + nc)`` rows and the scalar mean
        (at least float32). Both are differentiable w.r.t. ``pred``; the
        gradient is built in a single tensor with ``pred``'s strides.
    """
    return _RowsAndObjectness.apply(pred, image, anchor, grid_y, grid_x)
