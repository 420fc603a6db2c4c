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
    p_x1, p_x2 = pred[:, 0] - pred[:, 2] / 2, pred[:, 0] + pred[:, 2] / 2
    p_y1, p_y2 = pred[:, 1] - pred[:, 3] / 2, pred[:, 1] + pred[:, 3] / 2
    t_x1, t_x2 = target[:, 0] - target[:, 2] / 2, target[:, 0] + target[:,
                                                                       2] / 2
    t_y1, t_y2 = target[:, 1] - target[:, 3] / 2, target[:, 1] + target[:,
                                                                       3] / 2
    inter = (torch.min(p_x2, t_x2) - torch.max(p_x1, t_x1)).clamp(0) * \
        (torch.min(p_y2, t_y2) - torch.max(p_y1, t_y1)).clamp(0)
    p_w, p_h = p_x2 - p_x1, p_y2 - p_y1 + eps
    t_w, t_h = t_x2 - t_x1, t_y2 - t_y1 + eps
    union = p_w * p_h + t_w * t_h - inter + eps
    iou = inter / union
    enclose_w = torch.max(p_x2, t_x2) - torch.min(p_x1, t_x1)
    enclose_h = torch.max(p_y2, t_y2) - torch.min(p_y1, t_y1)
    diagonal2 = enclose_w**2 + enclose_h**2 + eps
    centre_dist2 = ((t_x1 + t_x2 - p_x1 - p_x2)**2 +
                    (t_y1 + t_y2 - p_y1 - p_y2)**2) / 4
    v = (4 / math.pi**2) * torch.pow(
        torch.atan(t_w / (t_h + eps)) - torch.atan(p_w / (p_h + eps)), 2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist2 / diagonal2 + v * alpha)
