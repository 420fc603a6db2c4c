"""SimOTA assigner of YOLOX (centre priors), batched over images."""
from typing import List, Optional, Tuple

import torch
from mmdet.models.task_modules.assigners import AssignResult
from mmdet.structures.bbox import get_box_tensor
from mmengine.structures import InstanceData
from torch import Tensor

from mmyolo_ext.registry import TASK_UTILS
from .dynamic_k_matching import (DEFAULT_MAX_PAIR_BYTES, box_iou_xyxy,
                                 dynamic_k_matching, slots_in_segments)

# Cost added to a (ground truth, prior) pair unless the prior centre is both
# inside the box and inside its centre region (YOLOX).
CENTRE_PRIOR_PENALTY = 100000.0


def in_box_and_centre(gt_boxes: Tensor, points: Tensor,
                      centre_radius: float) -> Tuple[Tensor, Tensor]:
    """Whether prior centres lie inside ground-truth boxes, and inside their
    centre regions (``centre_radius`` strides around the box centre).

    Args:
        gt_boxes (Tensor): ``(N, g, 4)`` xyxy boxes.
        points (Tensor): ``(N, C, 4)`` priors ``[cx, cy, stride_x,
            stride_y]``.
        centre_radius (float): Half size of the centre region in strides.

    Returns:
        tuple[Tensor, Tensor]: ``(N, g, C)`` booleans (strict inequalities,
        as MMDetection's ``SimOTAAssigner``).
    """
    x, y = points[:, None, :, 0], points[:, None, :, 1]
    x1, y1 = gt_boxes[..., 0, None], gt_boxes[..., 1, None]
    x2, y2 = gt_boxes[..., 2, None], gt_boxes[..., 3, None]
    in_box = (((x - x1) > 0) & ((y - y1) > 0) & ((x2 - x) > 0) &
              ((y2 - y) > 0))
    radius_x = centre_radius * points[:, None, :, 2]
    radius_y = centre_radius * points[:, None, :, 3]
    centre_x, centre_y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    in_centre = (((x - (centre_x - radius_x)) > 0) &
                 ((y - (centre_y - radius_y)) > 0) &
                 (((centre_x + radius_x) - x) > 0) &
                 (((centre_y + radius_y) - y) > 0))
    return in_box, in_centre


@TASK_UTILS.register_module()
class YOLOXSimOTAAssigner:
    """MMDetection's ``SimOTAAssigner`` (YOLOX), same arguments and result,
    with :meth:`batch_assign` assigning a whole batch at once.

    Candidates are the priors whose centre lies inside a ground-truth box or
    within ``center_radius`` strides of its centre; cost ``cls_weight *
    BCE(scores, one-hot) + iou_weight * -log(IoU + 1e-7)``, plus ``1e5``
    unless the prior is both inside the box and inside its centre region;
    the dynamic k sums the top ``candidate_topk`` IoUs, each ground truth
    takes its k cheapest candidates, and a candidate wanted by several ground
    truths goes to the cheapest one (:func:`dynamic_k_matching`).

    Args:
        center_radius (float): Centre region half size, in strides.
        candidate_topk (int): Number of top IoUs summed for the dynamic k.
        iou_weight (float): Weight of ``-log(IoU)`` in the cost.
        cls_weight (float): Weight of the class cost.
        iou_calculator (dict): Only the default ``BboxOverlaps2D`` (plain
            IoU) is supported.
        max_pair_bytes (int): Working memory of one matching chunk.
    """

    def __init__(self,
                 center_radius: float = 2.5,
                 candidate_topk: int = 10,
                 iou_weight: float = 3.0,
                 cls_weight: float = 1.0,
                 iou_calculator: dict = dict(type='BboxOverlaps2D'),
                 max_pair_bytes: int = DEFAULT_MAX_PAIR_BYTES) -> None:
        calculator = iou_calculator.get('type', '').split('.')[-1]
        if calculator != 'BboxOverlaps2D' or len(iou_calculator) > 1:
            raise ValueError('YOLOXSimOTAAssigner supports only '
                             "iou_calculator=dict(type='BboxOverlaps2D'), "
                             f'got {iou_calculator}')
        self.center_radius = center_radius
        self.topk = candidate_topk
        self.iou_weight = iou_weight
        self.cls_weight = cls_weight
        self.max_pair_bytes = max_pair_bytes

    def assign(self,
               pred_instances: InstanceData,
               gt_instances: InstanceData,
               gt_instances_ignore: Optional[InstanceData] = None,
               **kwargs) -> AssignResult:
        """Assign one image, as MMDetection's ``SimOTAAssigner.assign``.

        Args:
            pred_instances (InstanceData): ``priors`` ``(n, 4)`` ``[cx, cy,
                stride_x, stride_y]``, ``bboxes`` ``(n, 4)`` decoded xyxy
                boxes, ``scores`` ``(n, nc)`` class probabilities.
            gt_instances (InstanceData): ``bboxes`` ``(k, 4)`` xyxy and
                ``labels`` ``(k, )``.
            gt_instances_ignore (InstanceData, optional): Unused, as in
                MMDetection.

        Returns:
            AssignResult: ``gt_inds`` (1-based, 0 = background),
            ``max_overlaps`` (IoU with the assigned ground truth, -1e5 for
            background) and ``labels`` (-1 for background).
        """
        return self.batch_assign([pred_instances], [gt_instances])[0]

    @torch.no_grad()
    def batch_assign(
            self, batch_pred_instances: List[InstanceData],
            batch_gt_instances: List[InstanceData]) -> List[AssignResult]:
        """Assign a batch of images at once; each result equals
        :meth:`assign` on that image. All images must have the same number
        of priors.

        Args:
            batch_pred_instances (list[InstanceData]): Per image, as in
                :meth:`assign`.
            batch_gt_instances (list[InstanceData]): Per image, as in
                :meth:`assign`.

        Returns:
            list[AssignResult]: One per image.
        """
        num_images = len(batch_pred_instances)
        priors = torch.stack([p.priors for p in batch_pred_instances])
        bboxes = torch.stack([p.bboxes for p in batch_pred_instances])
        scores = torch.stack([p.scores for p in batch_pred_instances])
        device = bboxes.device
        num_priors = priors.size(1)
        # mmdet data samples may hold box objects (HorizontalBoxes)
        gt_boxes = torch.cat([
            get_box_tensor(g.bboxes) for g in batch_gt_instances
        ]).float().to(device)
        gt_labels = torch.cat([g.labels for g in batch_gt_instances
                               ]).long().to(device)
        gt_counts = [len(g) for g in batch_gt_instances]
        gt_image = torch.repeat_interleave(
            torch.arange(num_images, device=device),
            torch.tensor(gt_counts, device=device))

        valid = self._in_any_box_or_centre(gt_boxes, gt_image, priors)
        cand_image, cand_prior = torch.nonzero(valid, as_tuple=True)
        cand_points = priors[cand_image, cand_prior]
        probs = scores[cand_image, cand_prior].float()
        # torch's binary_cross_entropy clamps each log at -100
        log_pos = torch.log(probs).clamp_(min=-100)
        log_neg = torch.log(1 - probs).clamp_(min=-100)
        cls_base = log_neg.sum(1).neg_().mul_(self.cls_weight)

        num_classes = probs.size(1)

        def cls_delta(cand_index: Tensor, label: Tensor) -> Tensor:
            flat = cand_index * num_classes + label
            return (torch.take(log_neg, flat) -
                    torch.take(log_pos, flat)) * self.cls_weight

        def centre_prior_penalty(boxes: Tensor, cand_index: Tensor) -> Tensor:
            points = cand_points[cand_index.clamp(min=0)]
            in_box, in_centre = in_box_and_centre(boxes[:, None], points,
                                                  self.center_radius)
            return (~(in_box & in_centre)[:, 0]).to(boxes) * \
                CENTRE_PRIOR_PENALTY

        cand_boxes = bboxes[cand_image, cand_prior].float()
        matched = dynamic_k_matching(
            gt_boxes,
            gt_labels,
            gt_image,
            cand_boxes,
            cand_image,
            cls_base,
            cls_delta,
            num_images=num_images,
            topk=self.topk,
            iou_weight=self.iou_weight,
            iou_eps=1e-7,
            union_eps=1e-6,
            pair_penalty=centre_prior_penalty,
            max_pair_bytes=self.max_pair_bytes)

        # per-image results (MMDetection: IoU 0 where nothing could match)
        gt_start = torch.cumsum(torch.tensor([0] + gt_counts[:-1]), 0)
        no_match = torch.tensor(gt_counts, device=device) == 0
        no_match |= ~valid.any(1)
        gt_inds = torch.zeros((num_images, num_priors),
                              dtype=torch.long,
                              device=device)
        max_overlaps = torch.where(no_match[:, None], 0.,
                                   -CENTRE_PRIOR_PENALTY).expand(
                                       -1, num_priors).contiguous()
        labels = torch.full_like(gt_inds, -1)
        fg = matched >= 0
        fg_image, fg_prior, fg_gt = (cand_image[fg], cand_prior[fg],
                                     matched[fg])
        fg_iou = box_iou_xyxy(gt_boxes[fg_gt], cand_boxes[fg], union_eps=1e-6)
        gt_inds[fg_image, fg_prior] = fg_gt - gt_start.to(device)[fg_image] + 1
        max_overlaps[fg_image, fg_prior] = fg_iou
        labels[fg_image, fg_prior] = gt_labels[fg_gt]
        return [
            AssignResult(gt_counts[i], gt_inds[i], max_overlaps[i], labels[i])
            for i in range(num_images)
        ]

    def _in_any_box_or_centre(self, gt_boxes: Tensor, gt_image: Tensor,
                              priors: Tensor) -> Tensor:
        """``(B, n)``: prior centre inside some ground-truth box or centre
        region of its image (chunked over ground truths)."""
        num_images, num_priors = priors.shape[:2]
        valid = torch.zeros((num_images, num_priors),
                            dtype=torch.bool,
                            device=priors.device)
        if gt_boxes.size(0) == 0:
            return valid
        slot, _, max_gts = slots_in_segments(gt_image, num_images)
        pad_boxes = gt_boxes.new_zeros((num_images, max_gts, 4))
        pad_valid = torch.zeros((num_images, max_gts),
                                dtype=torch.bool,
                                device=priors.device)
        pad_boxes[gt_image, slot] = gt_boxes
        pad_valid[gt_image, slot] = True
        chunk = max(1, self.max_pair_bytes // (8 * num_images * num_priors))
        for start in range(0, max_gts, chunk):
            in_box, in_centre = in_box_and_centre(
                pad_boxes[:, start:start + chunk], priors, self.center_radius)
            valid |= ((in_box | in_centre)
                      & pad_valid[:, start:start + chunk, None]).any(1)
        return valid
