"""Complete IoU of YOLO boxes, as the YOLOv5/YOLOv7 box loss computes it."""
import math

import torch
from torch import Tensor


def ciou_xywh(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU (CIoU) of paired ``(n, 4)`` centre-size boxes.

    ``CIoU = IoU - centre_distance^2 / enclosing_diagonal^2 - alpha * v``
    with ``v`` the aspect-ratio term. As in the YOLOv5/YOLOv7 loss, ``eps`` is
    added to both heights, to the union and to the squared diagonal, and the
    weight ``alpha`` is taken without gradient.

    Args:
        pred (Tensor): ``(n, 4)`` predicted ``(cx, cy, w, h)``.
        target (Tensor): ``(n, 4)`` target ``(cx, cy, w, h)``.
        eps (float): Numerical guard.

    Returns:
        Tensor: ``(n,)`` CIoU values (at most 1).
    """
    # x and y handled together as (n, 2) columns
    p_lo, p_hi = pred[:, :2] - pred[:, 2:] / 2, pred[:, :2] + pred[:, 2:] / 2
    t_lo, t_hi = (target[:, :2] - target[:, 2:] / 2,
                  target[:, :2] + target[:, 2:] / 2)
    inter = (torch.min(p_hi, t_hi) - torch.max(p_lo, t_lo)).clamp(0).prod(1)
    height_eps = pred.new_tensor([0., eps])
    p_wh = p_hi - p_lo + height_eps
    t_wh = t_hi - t_lo + height_eps
    union = p_wh.prod(1) + t_wh.prod(1) - inter + eps
    iou = inter / union
    enclose = torch.max(p_hi, t_hi) - torch.min(p_lo, t_lo)
    diagonal2 = enclose.pow(2).sum(1) + eps
    centre_dist2 = (t_lo + t_hi - p_lo - p_hi).pow(2).sum(1) / 4
    v = (4 / math.pi**2) * torch.pow(
        torch.atan(t_wh[:, 0] / (t_wh[:, 1] + eps)) -
        torch.atan(p_wh[:, 0] / (p_wh[:, 1] + eps)), 2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist2 / diagonal2 + v * alpha)
