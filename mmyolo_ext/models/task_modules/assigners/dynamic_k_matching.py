"""SimOTA's dynamic-k matching of ground truths to candidates: a plain
per-image reference and the batched form the assigners use."""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

# Default working memory of one chunk of the matching: small enough to stay
# in the CPU caches, large enough to keep the per-chunk overhead low.
DEFAULT_MAX_PAIR_BYTES = 4 * 2**20

# Working memory of one (ground truth, candidate) pair in dynamic_k_matching:
# the gathered column planes, IoU temporaries, class-cost indices, total
# cost, sort key and column-minimum buffers.
_BYTES_PER_PAIR = 128


def slots_in_segments(segment: Tensor,
                      num_segments: int) -> Tuple[Tensor, Tensor, int]:
    """Position of every element within its segment (elements of a segment
    keep their relative order), the segment sizes and the largest size."""
    counts = torch.zeros(
        num_segments, dtype=torch.long, device=segment.device).index_add_(
            0, segment, torch.ones_like(segment))
    if segment.numel() == 0:
        return segment.new_zeros(0), counts, 0
    order = torch.argsort(segment, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.empty_like(segment).index_copy_(
        0, order,
        torch.arange(segment.numel(), device=segment.device) -
        starts.index_select(0, segment.index_select(0, order)))
    return slots, counts, int(counts.max())


def iou_of_sides(low1: Tuple[Tensor, Tensor], high1: Tuple[Tensor, Tensor],
                 area1: Tensor, low2: Tuple[Tensor, Tensor],
                 high2: Tuple[Tensor, Tensor], area2: Tensor,
                 union_eps: float = 0.) -> Tensor:
    """IoU of broadcastable boxes given as ``(x1, y1)``, ``(x2, y2)`` and
    area tensors, axis by axis (no ``(..., 2)`` temporaries).

    ``union_eps`` is a lower bound of the union: 0 gives the plain IoU (a
    zero union, which only two empty boxes can have, gives IoU 0 rather than
    NaN).
    """
    inter = None
    for lo1, hi1, lo2, hi2 in zip(low1, high1, low2, high2):
        side = torch.minimum(hi1, hi2).sub_(torch.maximum(lo1, lo2))
        side = side.clamp_(min=0)
        inter = side if inter is None else inter.mul_(side)
    union = (area1 + area2).sub_(inter)
    union = union.clamp_(min=union_eps if union_eps > 0 else
                         torch.finfo(union.dtype).tiny)
    return inter.div_(union)


def box_area_xyxy(boxes: Tensor) -> Tensor:
    """Areas of ``(..., 4)`` xyxy boxes."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou_xyxy(boxes1: Tensor, boxes2: Tensor,
                 union_eps: float = 0.) -> Tensor:
    """IoU of broadcastable ``(..., 4)`` xyxy boxes (see
    :func:`iou_of_sides`)."""
    x1a, y1a, x2a, y2a = boxes1.unbind(-1)
    x1b, y1b, x2b, y2b = boxes2.unbind(-1)
    return iou_of_sides((x1a, y1a), (x2a, y2a), box_area_xyxy(boxes1),
                        (x1b, y1b), (x2b, y2b), box_area_xyxy(boxes2),
                        union_eps)


def dynamic_k_matching_reference(
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_image: Tensor,
        cand_boxes: Tensor,
        cand_image: Tensor,
        cand_cls_base: Tensor,
        cand_cls_delta: Callable[[Tensor, Tensor], Tensor],
        num_images: int,
        topk: int,
        iou_weight: float = 3.0,
        iou_eps: float = 1e-8,
        union_eps: float = 0.,
        pair_penalty: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
        max_pair_bytes: int = DEFAULT_MAX_PAIR_BYTES) -> Tensor:
    """SimOTA dynamic-k matching, image by image: the specification of
    :func:`dynamic_k_matching` (same arguments, same result; slow).

    ``max_pair_bytes`` is accepted for the common signature and unused.
    """
    owner = torch.full((cand_boxes.size(0), ), -1, dtype=torch.long,
                       device=cand_boxes.device)
    for image in range(num_images):
        gts = torch.nonzero(gt_image == image)[:, 0]
        cands = torch.nonzero(cand_image == image)[:, 0]
        if gts.numel() == 0 or cands.numel() == 0:
            continue
        iou = box_iou_xyxy(gt_boxes[gts, None], cand_boxes[None, cands],
                           union_eps)  # (g, c)
        cand_index = cands[None].expand(gts.numel(), -1)
        cls_cost = cand_cls_base[cands][None] + cand_cls_delta(
            cand_index, gt_labels[gts, None])
        cost = torch.add(cls_cost, torch.log(iou + iou_eps),
                         alpha=-iou_weight)
        if pair_penalty is not None:
            cost = cost + pair_penalty(gt_boxes[gts], cand_index)
        cost = cost.clamp(min=0)  # >= 0 up to rounding; ties compare equal
        dynamic_k = torch.topk(iou, min(topk, cands.numel()),
                               dim=1).values.sum(1).int().clamp(min=1)
        taken = torch.zeros_like(cost, dtype=torch.bool)
        for g in range(gts.numel()):
            # the k cheapest columns; equal costs: the lower column first
            cheapest = torch.sort(cost[g], stable=True).indices
            taken[g, cheapest[:int(dynamic_k[g])]] = True
        # a column taken several times goes to its cheapest ground truth
        # (of all the image's; the first one on equal costs)
        contested = taken.sum(0) > 1
        taken[:, contested] = False
        taken[cost[:, contested].argmin(0), contested] = True
        columns = torch.nonzero(taken.any(0))[:, 0]
        owner[cands[columns]] = gts[taken[:, columns].int().argmax(0)]
    return owner


def dynamic_k_matching(
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_image: Tensor,
        cand_boxes: Tensor,
        cand_image: Tensor,
        cand_cls_base: Tensor,
        cand_cls_delta: Callable[[Tensor, Tensor], Tensor],
        num_images: int,
        topk: int,
        iou_weight: float = 3.0,
        iou_eps: float = 1e-8,
        union_eps: float = 0.,
        pair_penalty: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
        max_pair_bytes: int = DEFAULT_MAX_PAIR_BYTES) -> Tensor:
    """SimOTA dynamic-k matching, batched over images (the fast form of
    :func:`dynamic_k_matching_reference`, tested equal to it).

    Per image, with all its ground truths ``g`` and candidate columns ``c``:

    1. ``iou[g, c]``: IoU of the ground-truth box and the candidate's box.
    2. ``k[g] = max(1, int(sum of the top min(topk, C) IoUs of row g))``.
    3. ``cost[g, c] = cls_cost[g, c] + iou_weight * -log(iou + iou_eps)
       (+ pair_penalty)``, with the class cost of a one-hot target written as
       ``cand_cls_base[c] + cand_cls_delta(c, label[g])`` (the per-class
       term summed over classes plus the correction at the ground truth's
       class), so no (ground truth x candidate x class) tensor is formed.
    4. Each ground truth takes its ``k[g]`` lowest-cost columns (equal costs:
       the lower column index first).
    5. A column taken by several ground truths goes to the ground truth with
       the lowest cost in that column among all ground truths of the image
       (the first one on equal costs).

    Every ground truth is a row over the candidate columns of its image,
    padded to the largest image's (padding: empty boxes and an infinite
    class cost, so it has IoU 0 and is never the cheapest; no masks are
    applied to the pairs). Rows are processed in chunks of at most
    ``max_pair_bytes`` of working memory; the take counts and the column
    minimum are accumulated across chunks, so the result does not depend on
    the chunk size, and small chunks stay in the CPU caches.

    Args:
        gt_boxes (Tensor): ``(N, 4)`` xyxy ground-truth boxes.
        gt_labels (Tensor): ``(N,)`` int64 classes.
        gt_image (Tensor): ``(N,)`` int64 image of every ground truth.
        cand_boxes (Tensor): ``(K, 4)`` xyxy candidate (predicted) boxes.
        cand_image (Tensor): ``(K,)`` int64 image of every candidate.
        cand_cls_base (Tensor): ``(K,)`` class cost of an all-negative
            target.
        cand_cls_delta (callable): ``f(cand_index (n, C), label (n, 1)) ->
            (n, C)``: change of the class cost of candidates when ``label``
            is the positive class.
        num_images (int): Batch size.
        topk (int): Number of top IoUs summed for the dynamic k.
        iou_weight (float): Weight of the IoU cost.
        iou_eps (float): Added to the IoU inside the log.
        union_eps (float): Lower bound of the IoU's union.
        pair_penalty (callable, optional): ``f(gt_boxes (n, 4), cand_index
            (n, C)) -> (n, C)`` extra cost (YOLOX centre prior) of ground
            truths and the candidates of their image; ``cand_index`` is the
            candidate's row, -1 for padding.
        max_pair_bytes (int): Working-memory budget of one chunk.

    Returns:
        Tensor: For every candidate, the row (into the given ground truths)
        of the ground truth it is matched to, -1 when unmatched.
    """
    num_gts, num_cands = gt_boxes.size(0), cand_boxes.size(0)
    device = cand_boxes.device
    if num_gts == 0 or num_cands == 0:
        return torch.full((num_cands, ), -1, dtype=torch.long, device=device)
    cand_slot, cand_counts, max_cands = slots_in_segments(
        cand_image, num_images)
    inf = float('inf')

    # per image, its candidates as padded columns, one plane per quantity:
    # x1, y1, x2, y2, area, class cost of an all-negative target
    cand_flat = cand_image * max_cands + cand_slot
    columns = cand_boxes.new_zeros((6, num_images * max_cands))
    columns[5] = inf
    columns.index_copy_(
        1, cand_flat,
        torch.cat([
            cand_boxes, box_area_xyxy(cand_boxes)[:, None],
            cand_cls_base[:, None]
        ], 1).t())
    columns = columns.view(6, num_images, max_cands)
    column_cand = torch.full((num_images * max_cands, ),
                             -1,
                             dtype=torch.long,
                             device=device).index_copy_(
                                 0, cand_flat,
                                 torch.arange(num_cands, device=device)).view(
                                     num_images, max_cands)
    gt_sides = torch.cat([gt_boxes, box_area_xyxy(gt_boxes)[:, None]],
                         1).t()[:, :, None]  # (5, N, 1)
    column = torch.arange(max_cands, device=device)
    num_top = min(topk, max_cands)
    rank = torch.arange(num_top, device=device)

    # per column: how many ground truths take it, the sum of their rows (the
    # row itself when one takes it) and the cheapest ground truth (below)
    take_count = torch.zeros(
        num_images * max_cands, dtype=torch.long, device=device)
    taker_row_sum = torch.zeros_like(take_count)
    col_min_row = torch.full_like(take_count, torch.iinfo(torch.int64).max)
    chunk = max(1, max_pair_bytes // (_BYTES_PER_PAIR * max_cands))
    for start in range(0, num_gts, chunk):
        end = min(start + chunk, num_gts)
        image = gt_image[start:end]
        cols = columns.index_select(1, image)  # (6, n, C)
        gt = gt_sides[:, start:end]
        iou = iou_of_sides((gt[0], gt[1]), (gt[2], gt[3]), gt[4],
                           (cols[0], cols[1]), (cols[2], cols[3]), cols[4],
                           union_eps)
        dynamic_k = torch.topk(
            iou, num_top, dim=1).values.sum(1).int().clamp_(min=1)
        row_cands = column_cand.index_select(0, image)  # (n, C)
        cost = cand_cls_delta(row_cands.clamp(min=0),
                              gt_labels[start:end, None]).add_(cols[5])
        cost.add_(torch.log(iou.add_(iou_eps)), alpha=-iou_weight)
        if pair_penalty is not None:
            cost.add_(pair_penalty(gt_boxes[start:end], row_cands))
        # Packed sort keys, for one deterministic tie order on every device:
        # costs are >= 0 up to rounding, and the bit patterns of non-negative
        # float32 values sort like the values, so ``cost bits << 32 | i`` in
        # an int64 orders by cost, then by i (the column for the top-k, the
        # ground-truth row for the column minimum). torch.topk on the floats
        # alone orders equal costs differently on CPU and CUDA.
        cost_bits = cost.clamp_(min=0).view(torch.int32).to(
            torch.int64).bitwise_left_shift_(32)
        picked = torch.topk(
            cost_bits | column, num_top, dim=1, largest=False).indices
        takes = ((rank < dynamic_k[:, None]) &
                 (picked < cand_counts.index_select(0, image)[:, None]))
        # masked update without boolean indexing (no host synchronisation)
        gt_row = torch.arange(start, end, device=device)[:, None]
        image_base = (image * max_cands)[:, None]
        taken_flat = (picked + image_base).view(-1)
        take_count.index_add_(0, taken_flat, takes.long().view(-1))
        taker_row_sum.index_add_(0, taken_flat,
                                 torch.where(takes, gt_row, 0).view(-1))
        # per column, the lowest cost and then the first ground truth
        col_min_row.scatter_reduce_(0, (image_base + column).view(-1),
                                    (cost_bits | gt_row).view(-1), 'amin')

    owner = torch.where(take_count > 1, col_min_row & 0xFFFFFFFF,
                        taker_row_sum)
    owner = torch.where(take_count > 0, owner, -1)
    return owner.index_select(0, cand_flat)
