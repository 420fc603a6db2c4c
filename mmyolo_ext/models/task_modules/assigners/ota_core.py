"""Shared core of the YOLO label assigners.

Three pieces, used by :class:`YOLOv5Assigner`, :class:`SimOTAAssigner` (both
modes) and :class:`V7AuxAssigner`:

* :func:`grid_candidates`: the YOLOv5 rule (anchor wh-ratio test, centre cell
  plus neighbour cells) that turns ground truths into candidate
  ``(image, anchor, cell)`` entries, one per (ground truth, anchor, offset).
* :func:`dynamic_k_matching`: SimOTA's dynamic-k matching of ground truths to
  candidate columns, batched over images in a padded ``(B, G, C)`` layout and
  chunked over ground truths so that the pairwise working memory stays under a
  byte budget (the result does not depend on the chunking).
* :class:`GridAssignerBase`: candidates + optional dynamic-k matching on the
  per-level raw predictions of an anchor-based YOLO head.

Everything is vectorised: no Python loop over images or ground truths, and no
host synchronisation other than the few needed to size tensors.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# Working memory of one (ground truth, candidate) pair in dynamic_k_matching:
# IoU temporaries, class cost, total cost, sort key and top-k buffers.
_BYTES_PER_PAIR = 64

# Offsets (dx, dy) of the centre cell and its left, up, right, down
# neighbours, in the order the reference lists its candidates.
_NEIGHBOUR_OFFSETS = ((0., 0.), (1., 0.), (0., 1.), (-1., 0.), (0., -1.))


@dataclass
class GridCells:
    """Flat list of (ground truth, anchor, cell) entries over all levels.

    Every field is an int64 tensor of the same length ``K``.

    Attributes:
        image (Tensor): Image index in the batch.
        anchor (Tensor): Anchor index within the level.
        grid_y (Tensor): Cell row.
        grid_x (Tensor): Cell column.
        target (Tensor): Row of the ground truth in the ``targets`` tensor.
        level (Tensor): Feature level.
    """
    image: Tensor
    anchor: Tensor
    grid_y: Tensor
    grid_x: Tensor
    target: Tensor
    level: Tensor

    def __len__(self) -> int:
        return self.image.numel()

    def index(self, index: Tensor) -> 'GridCells':
        """Entries selected by a boolean mask or an index tensor."""
        return GridCells(self.image[index], self.anchor[index],
                         self.grid_y[index], self.grid_x[index],
                         self.target[index], self.level[index])

    def with_target(self, target: Tensor) -> 'GridCells':
        """The same cells with other ground-truth rows."""
        return GridCells(self.image, self.anchor, self.grid_y, self.grid_x,
                         target, self.level)

    def split_levels(self, num_levels: int) -> List[Dict[str, Tensor]]:
        """Per level a dict of ``image, anchor, grid_y, grid_x, target``,
        keeping the order of the entries."""
        out = []
        for level in range(num_levels):
            keep = self.level == level
            out.append(
                dict(
                    image=self.image[keep],
                    anchor=self.anchor[keep],
                    grid_y=self.grid_y[keep],
                    grid_x=self.grid_x[keep],
                    target=self.target[keep]))
        return out


def grid_candidates(targets: Tensor, grid_sizes: Sequence[Tuple[int, int]],
                    anchors_grid: Sequence[Tensor], anchor_t: float,
                    neighbour_bias: float) -> GridCells:
    """YOLOv5 candidate rule on every level.

    A ground truth is kept for an anchor when its width and height are both
    within a factor ``anchor_t`` of the anchor's. Each kept pair gives the cell
    holding the box centre and the neighbour cells whose side the centre is
    closer to than ``neighbour_bias`` cells (0.5: the two nearest neighbours,
    1.0: all four), a neighbour being used only when the centre is more than
    one cell away from the grid border on that side.

    Args:
        targets (Tensor): ``(n, 6)`` rows ``[image, class, cx, cy, w, h]``,
            the box normalised to the input size.
        grid_sizes (Sequence[tuple[int, int]]): ``(ny, nx)`` per level.
        anchors_grid (Sequence[Tensor]): per level ``(na, 2)`` anchor sizes
            in grid cells of that level.
        anchor_t (float): Largest allowed ratio between box and anchor sides.
        neighbour_bias (float): 0.5 (3 cells) or 1.0 (5 cells).

    Returns:
        GridCells: Ordered by level, then offset (centre, left, up, right,
        down), then anchor, then target row, as the reference orders them.
        A (target, anchor, cell) entry is never merged with another one
        holding the same cell.
    """
    device = targets.device
    entries = []
    offsets = torch.tensor(
        _NEIGHBOUR_OFFSETS, device=device) * neighbour_bias  # (5, 2)
    for level, ((ny, nx), anchors) in enumerate(zip(grid_sizes,
                                                    anchors_grid)):
        gain = torch.tensor([nx, ny, nx, ny],
                            dtype=targets.dtype,
                            device=device)
        boxes = targets[:, 2:6] * gain  # grid units
        ratio = boxes[None, :, 2:4] / anchors[:, None, :]  # (na, n, 2)
        fits = torch.max(ratio, 1. / ratio).amax(dim=2) < anchor_t
        centre = boxes[:, :2]
        to_far_side = gain[:2] - centre
        near_low = (centre % 1. < neighbour_bias) & (centre > 1.)
        near_high = (to_far_side % 1. < neighbour_bias) & (to_far_side > 1.)
        use_offset = torch.stack([
            torch.ones_like(near_low[:, 0]), near_low[:, 0], near_low[:, 1],
            near_high[:, 0], near_high[:, 1]
        ])  # (5, n)
        offset_i, anchor_i, target_i = torch.nonzero(
            use_offset[:, None, :] & fits[None], as_tuple=True)
        cell = (centre[target_i] - offsets[offset_i]).long()
        entries.append(
            GridCells(
                image=targets[target_i, 0].long(),
                anchor=anchor_i,
                grid_y=cell[:, 1].clamp_(0, ny - 1),
                grid_x=cell[:, 0].clamp_(0, nx - 1),
                target=target_i,
                level=torch.full_like(target_i, level)))
    return GridCells(*(torch.cat(field) for field in zip(
        *((e.image, e.anchor, e.grid_y, e.grid_x, e.target, e.level)
          for e in entries))))


def slots_in_segments(segment: Tensor,
                      num_segments: int) -> Tuple[Tensor, int]:
    """Position of every element within its segment (elements of a segment
    keep their relative order), and the largest segment size."""
    if segment.numel() == 0:
        return segment.new_zeros(0), 0
    counts = torch.bincount(segment, minlength=num_segments)
    order = torch.argsort(segment, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.empty_like(segment)
    slots[order] = torch.arange(
        segment.numel(), device=segment.device) - starts[segment[order]]
    return slots, int(counts.max())


def box_iou_xyxy(boxes1: Tensor, boxes2: Tensor,
                 union_eps: float = 0.) -> Tensor:
    """IoU of broadcastable ``(..., 4)`` xyxy boxes.

    Computed axis by axis (no ``(..., 2)`` temporaries). ``union_eps`` is a
    lower bound of the union: 0 gives the plain IoU (a zero union, which only
    two empty boxes can have, gives IoU 0 rather than NaN).
    """
    inter_w = (torch.min(boxes1[..., 2], boxes2[..., 2]) -
               torch.max(boxes1[..., 0], boxes2[..., 0])).clamp_(min=0)
    inter_h = (torch.min(boxes1[..., 3], boxes2[..., 3]) -
               torch.max(boxes1[..., 1], boxes2[..., 1])).clamp_(min=0)
    inter = inter_w.mul_(inter_h)
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] -
                                                 boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] -
                                                 boxes2[..., 1])
    union = (area1 + area2).sub_(inter)
    union = union.clamp_(min=union_eps if union_eps > 0 else
                         torch.finfo(union.dtype).tiny)
    return inter.div_(union)


def _sortable_keys(cost: Tensor, column: Tensor) -> Tensor:
    """int64 keys ordering float32 costs ascending, ties by column index."""
    bits = cost.contiguous().view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.to(torch.int64) << 32) | column


def dynamic_k_matching(
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_image: Tensor,
        cand_boxes: Tensor,
        cand_image: Tensor,
        cand_cls_base: Tensor,
        cand_cls_delta: Tensor,
        num_images: int,
        topk: int,
        iou_weight: float = 3.0,
        iou_eps: float = 1e-8,
        union_eps: float = 0.,
        pair_penalty: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
        max_pair_bytes: int = 512 * 2**20) -> Tuple[Tensor, Tensor]:
    """SimOTA dynamic-k matching, batched over images.

    Per image, with all its ground truths ``g`` and candidate columns ``c``:

    1. ``iou[g, c]``: IoU of the ground-truth box and the candidate's box.
    2. ``k[g] = max(1, int(sum of the top min(topk, C) IoUs of row g))``.
    3. ``cost[g, c] = cls_cost[g, c] + iou_weight * -log(iou + iou_eps)
       (+ pair_penalty)``, with the class cost of a one-hot target written as
       ``cand_cls_base[c] + cand_cls_delta[c, label[g]]`` (the per-class
       term summed over classes plus the correction at the ground truth's
       class), so no (ground truth x candidate x class) tensor is formed.
    4. Each ground truth takes its ``k[g]`` lowest-cost columns (equal costs:
       the lower column index first).
    5. A column taken by several ground truths goes to the ground truth with
       the lowest cost in that column among all ground truths of the image
       (the first one on equal costs).

    Images are padded to ``(B, G, C)``; ground truths are processed in chunks
    sized by ``max_pair_bytes`` (the column minimum and the take counts are
    accumulated across chunks, so the result does not depend on the chunk
    size).

    Args:
        gt_boxes (Tensor): ``(N, 4)`` xyxy ground-truth boxes.
        gt_labels (Tensor): ``(N,)`` int64 classes.
        gt_image (Tensor): ``(N,)`` int64 image of every ground truth.
        cand_boxes (Tensor): ``(K, 4)`` xyxy candidate (predicted) boxes.
        cand_image (Tensor): ``(K,)`` int64 image of every candidate.
        cand_cls_base (Tensor): ``(K,)`` class cost of an all-negative
            target.
        cand_cls_delta (Tensor): ``(K, nc)`` change of the class cost when
            class ``j`` is the positive one.
        num_images (int): Batch size.
        topk (int): Number of top IoUs summed for the dynamic k.
        iou_weight (float): Weight of the IoU cost.
        iou_eps (float): Added to the IoU inside the log.
        union_eps (float): Lower bound of the IoU's union.
        pair_penalty (callable, optional): ``f(gt_boxes (B, g, 4),
            cand_index (B, C)) -> (B, g, C)`` extra cost (YOLOX centre prior);
            ``cand_index`` is the candidate's row, -1 for padding.
        max_pair_bytes (int): Working-memory budget of one chunk.

    Returns:
        tuple[Tensor, Tensor]: For every candidate, the row (into the given
        ground truths) of the ground truth it is matched to, -1 when
        unmatched; and its IoU with that ground truth (0 when unmatched).
    """
    num_gts, num_cands = gt_boxes.size(0), cand_boxes.size(0)
    device = cand_boxes.device
    matched = torch.full((num_cands, ), -1, dtype=torch.long, device=device)
    matched_iou = cand_boxes.new_zeros(num_cands)
    if num_gts == 0 or num_cands == 0:
        return matched, matched_iou
    gt_slot, max_gts = slots_in_segments(gt_image, num_images)
    cand_slot, max_cands = slots_in_segments(cand_image, num_images)
    shape_bc = (num_images, max_cands)
    pad_boxes = cand_boxes.new_zeros(shape_bc + (4, ))
    pad_boxes[cand_image, cand_slot] = cand_boxes
    pad_cand = torch.full(shape_bc, -1, dtype=torch.long, device=device)
    pad_cand[cand_image, cand_slot] = torch.arange(num_cands, device=device)
    col_valid = pad_cand >= 0
    pad_base = cand_cls_base.new_zeros(shape_bc)
    pad_base[cand_image, cand_slot] = cand_cls_base
    # (B, nc, C): gathering along dim 1 with the labels gives (B, g, C)
    pad_delta = cand_cls_delta.new_zeros(
        (num_images, cand_cls_delta.size(1), max_cands))
    pad_delta[cand_image, :, cand_slot] = cand_cls_delta
    shape_bg = (num_images, max_gts)
    pad_gt_boxes = gt_boxes.new_zeros(shape_bg + (4, ))
    pad_gt_boxes[gt_image, gt_slot] = gt_boxes
    pad_labels = gt_labels.new_zeros(shape_bg)
    pad_labels[gt_image, gt_slot] = gt_labels
    pad_gt = torch.full(shape_bg, -1, dtype=torch.long, device=device)
    pad_gt[gt_image, gt_slot] = torch.arange(num_gts, device=device)
    gt_valid = pad_gt >= 0

    num_top = min(topk, max_cands)
    column = torch.arange(max_cands, device=device)
    take_count = torch.zeros(shape_bc, dtype=torch.long, device=device)
    taker = torch.full(shape_bc, -1, dtype=torch.long, device=device)
    col_min = torch.full(shape_bc, float('inf'), device=device)
    col_argmin = torch.zeros(shape_bc, dtype=torch.long, device=device)
    rank = torch.arange(num_top, device=device)
    image_base = (torch.arange(num_images, device=device) * max_cands)[:,
                                                                        None,
                                                                        None]
    chunk = max(1, max_pair_bytes // (_BYTES_PER_PAIR * num_images *
                                      max_cands))
    for start in range(0, max_gts, chunk):
        end = min(start + chunk, max_gts)
        boxes = pad_gt_boxes[:, start:end]
        valid = gt_valid[:, start:end, None] & col_valid[:, None, :]
        iou = box_iou_xyxy(boxes[:, :, None, :], pad_boxes[:, None, :, :],
                           union_eps).masked_fill_(~valid, 0.)
        dynamic_k = torch.topk(
            iou, num_top, dim=2).values.sum(2).int().clamp_(min=1)
        labels = pad_labels[:, start:end, None].expand(-1, -1, max_cands)
        cost = torch.gather(pad_delta, 1, labels).add_(pad_base[:, None, :])
        cost.add_(torch.log(iou + iou_eps).mul_(-iou_weight))
        if pair_penalty is not None:
            cost.add_(pair_penalty(boxes, pad_cand))
        cost.masked_fill_(~valid, float('inf'))
        keys = _sortable_keys(cost, column)
        picked = torch.topk(keys, num_top, dim=2, largest=False).indices
        takes = (rank < dynamic_k[..., None]) & gt_valid[:, start:end, None]
        flat_cols = (picked + image_base)[takes]
        take_count.view(-1).index_add_(
            0, flat_cols, torch.ones_like(flat_cols))
        gt_slots = torch.arange(start, end, device=device)[None, :, None]
        taker.view(-1).scatter_reduce_(
            0, flat_cols,
            gt_slots.expand_as(picked)[takes],
            reduce='amax')
        chunk_min, chunk_argmin = cost.min(dim=1)
        better = chunk_min < col_min
        col_min = torch.where(better, chunk_min, col_min)
        col_argmin = torch.where(better, chunk_argmin + start, col_argmin)

    owner_slot = torch.where(take_count > 1, col_argmin, taker)
    owner = torch.gather(pad_gt, 1, owner_slot.clamp(min=0))
    owner = torch.where(take_count > 0, owner, -1)
    matched = owner[cand_image, cand_slot]
    is_matched = matched >= 0
    matched_iou = torch.where(
        is_matched,
        box_iou_xyxy(gt_boxes[matched.clamp(min=0)], cand_boxes, union_eps),
        0.)
    return matched, matched_iou


class GridAssignerBase:
    """Assigner of ground truths to the cells of an anchor-based YOLO head.

    Candidates come from :func:`grid_candidates`; with ``topk=None`` every
    candidate is a match (YOLOv5 / the reference's ``ComputeLoss``),
    otherwise the candidates are matched by :func:`dynamic_k_matching` on the
    decoded predictions (the reference's ``ComputeLossOTA``).

    Args:
        anchor_t (float): Largest box/anchor side ratio of a candidate.
        neighbour_bias (float): 0.5 (centre + 2 neighbour cells) or 1.0
            (centre + 4 neighbour cells).
        topk (int, optional): IoUs summed for the dynamic k; None: no
            matching, candidates are the matches.
        iou_weight (float): Weight of ``-log(IoU)`` in the matching cost.
        iou_eps (float): Added to the IoU inside the log.
        max_pair_bytes (int): Working-memory budget of the matching.
    """

    def __init__(self,
                 anchor_t: float = 4.0,
                 neighbour_bias: float = 0.5,
                 topk: Optional[int] = 10,
                 iou_weight: float = 3.0,
                 iou_eps: float = 1e-8,
                 max_pair_bytes: int = 512 * 2**20) -> None:
        if neighbour_bias not in (0.5, 1.0):
            raise ValueError(
                f'neighbour_bias must be 0.5 or 1.0, got {neighbour_bias}')
        self.anchor_t = anchor_t
        self.neighbour_bias = neighbour_bias
        self.topk = topk
        self.iou_weight = iou_weight
        self.iou_eps = iou_eps
        self.max_pair_bytes = max_pair_bytes

    @torch.no_grad()
    def assign_grid(self,
                    preds: Sequence[Tensor],
                    targets: Tensor,
                    anchors_grid: Sequence[Tensor],
                    strides: Sequence[int],
                    input_hw: Tuple[int, int],
                    topk: Optional[int] = None) -> GridCells:
        """Assign ground truths to cells.

        Args:
            preds (Sequence[Tensor]): Per level raw predictions
                ``(bs, na, ny, nx, 5 + nc)``.
            targets (Tensor): ``(n, 6)`` rows ``[image, class, cx, cy, w,
                h]``, normalised to the input size; validated by the caller.
            anchors_grid (Sequence[Tensor]): Per level ``(na, 2)`` anchors in
                grid cells.
            strides (Sequence[int]): Per level stride in pixels.
            input_hw (tuple[int, int]): Input height and width in pixels.
            topk (int, optional): Overrides ``self.topk`` when given.

        Returns:
            GridCells: The matches. Without matching, in candidate order;
            with matching, per level by image then candidate order.
        """
        targets = targets.float()
        grid_sizes = [tuple(p.shape[2:4]) for p in preds]
        cands = grid_candidates(targets, grid_sizes, anchors_grid,
                                self.anchor_t, self.neighbour_bias)
        topk = self.topk if topk is None else topk
        if topk is None or len(cands) == 0:
            return cands
        boxes, cls_base, cls_delta = self._candidate_costs(
            preds, cands, anchors_grid, strides)
        height, width = input_hw
        scale = targets.new_tensor([width, height, width, height])
        gt_xywh = targets[:, 2:6] * scale
        gt_boxes = torch.cat(
            [gt_xywh[:, :2] - gt_xywh[:, 2:] / 2,
             gt_xywh[:, :2] + gt_xywh[:, 2:] / 2], 1)
        matched, _ = dynamic_k_matching(
            gt_boxes,
            targets[:, 1].long(),
            targets[:, 0].long(),
            boxes,
            cands.image,
            cls_base,
            cls_delta,
            num_images=preds[0].size(0),
            topk=topk,
            iou_weight=self.iou_weight,
            iou_eps=self.iou_eps,
            max_pair_bytes=self.max_pair_bytes)
        keep = matched >= 0
        # per level: by image, then candidate order (a stable sort)
        sort_key = cands.level * preds[0].size(0) + cands.image
        order = torch.argsort(sort_key[keep], stable=True)
        return cands.with_target(matched).index(
            torch.nonzero(keep, as_tuple=True)[0][order])

    @staticmethod
    def _candidate_costs(
            preds: Sequence[Tensor], cands: GridCells,
            anchors_grid: Sequence[Tensor],
            strides: Sequence[int]) -> Tuple[Tensor, Tensor, Tensor]:
        """Decoded boxes (pixels, xyxy) and class-cost terms of candidates.

        The class cost is the BCE of ``p = sqrt(sigmoid(cls) *
        sigmoid(obj))``, written as a logit, against the one-hot target:
        summed over classes it is ``sum_j softplus(z_j) - z_label``.
        """
        num_cands = len(cands)
        num_classes = preds[0].size(-1) - 5
        boxes = preds[0].new_empty((num_cands, 4), dtype=torch.float32)
        logits = preds[0].new_empty((num_cands, num_classes),
                                    dtype=torch.float32)
        for level, (pred, anchors, stride) in enumerate(
                zip(preds, anchors_grid, strides)):
            at_level = torch.nonzero(cands.level == level, as_tuple=True)[0]
            if at_level.numel() == 0:
                continue
            anchor = cands.anchor[at_level]
            grid_x = cands.grid_x[at_level]
            grid_y = cands.grid_y[at_level]
            rows = pred[cands.image[at_level], anchor, grid_y,
                        grid_x].float()
            grid = torch.stack([grid_x, grid_y], 1)
            xy = (rows[:, :2].sigmoid() * 2. - 0.5 + grid) * stride
            wh = (rows[:, 2:4].sigmoid() * 2)**2 * anchors[anchor] * stride
            boxes[at_level] = torch.cat([xy - wh / 2, xy + wh / 2], 1)
            prob = (rows[:, 5:].sigmoid() * rows[:, 4:5].sigmoid()).sqrt_()
            # keep the logit finite where a probability rounds to 0 or 1
            finfo = torch.finfo(prob.dtype)
            prob = prob.clamp_(min=finfo.tiny, max=1. - finfo.eps / 2)
            logits[at_level] = torch.log(prob / (1 - prob))
        cls_base = torch.nn.functional.softplus(logits).sum(1)
        return boxes, cls_base, -logits
