"""Ground truths of a batch as the YOLO loss's ``(n, 6)`` target rows."""
from typing import Sequence, Tuple, Union

import torch
from mmengine.structures import InstanceData
from torch import Tensor


def yolo_targets(batch_gt_instances: Union[Tensor, Sequence[InstanceData]],
                 input_hw: Tuple[int, int]) -> Tensor:
    """Convert ground truths to rows ``[image, class, cx, cy, w, h]`` with
    the box normalised to the input size (x, w by the width; y, h by the
    height), the ``targets`` of :class:`ComputeLossOTA`.

    Args:
        batch_gt_instances (Tensor | Sequence[InstanceData]): Either MMYOLO's
            packed ``(n, 6)`` tensor ``[image, class, x1, y1, x2, y2]`` in
            pixels (``yolov5_collate``), or per image an ``InstanceData``
            with ``bboxes`` ``(k, 4)`` xyxy pixels and ``labels`` ``(k,)``.
            Neither is modified.
        input_hw (tuple[int, int]): Batch input height and width in pixels.

    Returns:
        Tensor: ``(n, 6)`` float32 rows.
    """
    if isinstance(batch_gt_instances, Tensor):
        if batch_gt_instances.dim() != 2 or batch_gt_instances.size(1) != 6:
            raise ValueError('packed ground truths must be (n, 6) rows '
                             '[image, class, x1, y1, x2, y2], got shape '
                             f'{tuple(batch_gt_instances.shape)}')
        image_class = batch_gt_instances[:, :2].float()
        boxes = batch_gt_instances[:, 2:].float()
    else:
        image_class = torch.cat([
            torch.stack([
                torch.full_like(gt.labels, i, dtype=torch.float32),
                gt.labels.float()
            ], 1) for i, gt in enumerate(batch_gt_instances)
        ]) if len(batch_gt_instances) else torch.zeros(0, 2)
        boxes = torch.cat([gt.bboxes.float() for gt in batch_gt_instances]
                          ) if len(batch_gt_instances) else torch.zeros(0, 4)
    height, width = input_hw
    scale = boxes.new_tensor([width, height])
    xy1, xy2 = boxes[:, :2], boxes[:, 2:]
    return torch.cat([
        image_class.to(boxes.device), (xy1 + xy2) / 2 / scale,
        (xy2 - xy1) / scale
    ], 1)
