"""Shared core of the YOLO label assigners.

Three pieces, used by :class:`YOLOv5Assigner`, :class:`SimOTAAssigner` (both
modes) and :class:`V7AuxAssigner`:

* :func:`grid_candidates`: the YOLOv5 rule (anchor wh-ratio test, centre cell
  plus neighbour cells) that turns ground truths into candidate
  ``(image, anchor, cell)`` entries, one per (ground truth, anchor, offset).
* :func:`dynamic_k_matching`: SimOTA's dynamic-k matching of ground truths to
  candidate columns, batched over images (every ground truth a row over its
  image's candidates, padded to the largest image's) and chunked over ground
  truths so that the pairwise working memory stays under a byte budget (the
  result does not depend on the chunking).
* :class:`GridAssignerBase`: candidates + optional dynamic-k matching on the
  per-level raw predictions of an anchor-based YOLO head.

The matching runs in float32 with autocast off (its sort keys are float32
bit patterns), whatever the predictions' dtype.

Everything is vectorised: no Python loop over images or ground truths (only
over ground-truth chunks when the pairs exceed the memory budget), the same
code on CPU and CUDA, and a fixed number of host synchronisations per call
(tensor sizes), none per image or ground truth.

Ties: a cell generated for several ground truths (or offsets) is several
candidate columns with equal costs. Each ground truth takes the cheapest
columns, equal costs in column order (deterministic on every device). The
reference uses ``torch.topk``, whose order among equal values is an artifact
of its sorting algorithm (and differs between CPU and CUDA); the multisets of
matches agree with the official vectors, while in very crowded batches the
reference may pick other copies of a repeated cell.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...float32_region import float32_region

# Default working memory of one chunk of the matching: small enough to stay
# in the CPU caches, large enough to keep the per-chunk overhead low.
DEFAULT_MAX_PAIR_BYTES = 4 * 2**20

# Working memory of one (ground truth, candidate) pair in dynamic_k_matching:
# the gathered column planes, IoU temporaries, class-cost indices, total
# cost, sort key and column-minimum buffers.
_BYTES_PER_PAIR = 128

# Offsets (dx, dy) of the centre cell and its left, up, right, down
# neighbours, in the order the reference lists its candidates.
_NEIGHBOUR_OFFSETS = ((0., 0.), (1., 0.), (0., 1.), (-1., 0.), (0., -1.))


@dataclass
class GridCells:
    """Flat list of (ground truth, anchor, cell) entries over all levels,
    grouped by level (level 0 first; the producers here keep this order).

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

    def fields(self) -> Tuple[Tensor, ...]:
        return (self.image, self.anchor, self.grid_y, self.grid_x,
                self.target, self.level)

    def index(self, index: Tensor) -> 'GridCells':
        """Entries at the given int64 positions."""
        return GridCells(*(f.index_select(0, index) for f in self.fields()))

    def with_target(self, target: Tensor) -> 'GridCells':
        """The same cells with other ground-truth rows."""
        return GridCells(self.image, self.anchor, self.grid_y, self.grid_x,
                         target, self.level)

    def level_slices(self, num_levels: int) -> List[slice]:
        """Position range of every level (one host synchronisation)."""
        counts = torch.zeros(
            num_levels, dtype=torch.long,
            device=self.level.device).index_add_(
                0, self.level, torch.ones_like(self.level)).tolist()
        starts = [sum(counts[:i]) for i in range(num_levels)]
        return [slice(a, a + n) for a, n in zip(starts, counts)]

    def level_cells(self,
                    num_levels: int) -> List[Tuple[Tensor, Tensor, Tensor,
                                                   Tensor]]:
        """Per level the ``(image, anchor, grid_y, grid_x)`` index of its
        entries (a prediction's ``(bs, na, ny, nx)`` cells)."""
        return [(self.image[part], self.anchor[part], self.grid_y[part],
                 self.grid_x[part])
                for part in self.level_slices(num_levels)]

    def split_levels(self, num_levels: int) -> List[Dict[str, Tensor]]:
        """Per level a dict of ``image, anchor, grid_y, grid_x, target``,
        keeping the order of the entries."""
        return [
            dict(
                image=self.image[part],
                anchor=self.anchor[part],
                grid_y=self.grid_y[part],
                grid_x=self.grid_x[part],
                target=self.target[part])
            for part in self.level_slices(num_levels)
        ]


def grid_candidates(targets: Tensor, grid_sizes: Sequence[Tuple[int, int]],
                    anchors_grid: Tensor, anchor_t: float,
                    neighbour_bias: float) -> GridCells:
    """YOLOv5 candidate rule on every level.

    A ground truth is kept for an anchor when its width and height are both
    within a factor ``anchor_t`` of the anchor's. Each kept pair gives the cell
    holding the box centre and the neighbour cells whose side the centre is
    closer to than ``neighbour_bias`` cells (0.5: the two nearest neighbours,
    1.0: all four), a neighbour being used only when the centre is more than
    one cell away from the grid border on that side. All levels are handled
    at once.

    Args:
        targets (Tensor): ``(n, 6)`` rows ``[image, class, cx, cy, w, h]``,
            the box normalised to the input size.
        grid_sizes (Sequence[tuple[int, int]]): ``(ny, nx)`` per level.
        anchors_grid (Tensor): ``(nl, na, 2)`` anchor sizes in grid cells of
            their level.
        anchor_t (float): Largest allowed ratio between box and anchor sides.
        neighbour_bias (float): 0.5 (3 cells) or 1.0 (5 cells).

    Returns:
        GridCells: Ordered by level, then offset (centre, left, up, right,
        down), then anchor, then target row, as the reference orders them.
        A (target, anchor, cell) entry is never merged with another one
        holding the same cell.
    """
    device = targets.device
    offsets = torch.tensor(
        _NEIGHBOUR_OFFSETS, device=device) * neighbour_bias  # (5, 2)
    sizes = torch.tensor([[nx, ny] for ny, nx in grid_sizes],
                         dtype=targets.dtype,
                         device=device)  # (nl, 2)
    gain = sizes.repeat(1, 2)  # (nl, 4): nx, ny, nx, ny
    boxes = targets[None, :, 2:6] * gain[:, None]  # (nl, n, 4) grid units
    ratio = boxes[:, None, :, 2:4] / anchors_grid[:, :, None]  # (nl,na,n,2)
    fits = torch.max(ratio, 1. / ratio).amax(dim=3) < anchor_t
    centre = boxes[..., :2]  # (nl, n, 2)
    to_far_side = sizes[:, None] - centre
    near_low = (centre % 1. < neighbour_bias) & (centre > 1.)
    near_high = (to_far_side % 1. < neighbour_bias) & (to_far_side > 1.)
    use_offset = torch.stack([
        torch.ones_like(near_low[..., 0]), near_low[..., 0],
        near_low[..., 1], near_high[..., 0], near_high[..., 1]
    ], 1)  # (nl, 5, n)
    level, offset_i, anchor_i, target_i = torch.nonzero(
        use_offset[:, :, None, :] & fits[:, None], as_tuple=True)
    num_targets = targets.size(0)
    cell = (centre.reshape(-1, 2).index_select(0, level * num_targets +
                                               target_i) -
            offsets.index_select(0, offset_i)).long()
    cell = torch.minimum(cell.clamp_(min=0),
                         (sizes.long() - 1).index_select(0, level))
    return GridCells(
        image=targets[:, 0].long().index_select(0, target_i),
        anchor=anchor_i,
        grid_y=cell[:, 1],
        grid_x=cell[:, 0],
        target=target_i,
        level=level)


def gather_level_cells(pred: Tensor, image: Tensor, anchor: Tensor,
                       grid_y: Tensor, grid_x: Tensor) -> Tensor:
    """Channel vectors ``(k, C)`` of one level's ``(bs, na, ny, nx, C)``
    predictions at the given cells."""
    if pred.is_contiguous():  # (the official layout) rows are contiguous
        _, num_anchors, ny, nx, channels = pred.shape
        flat = ((image * num_anchors + anchor) * ny + grid_y) * nx + grid_x
        return pred.view(-1, channels).index_select(0, flat)
    return pred[image, anchor, grid_y, grid_x]


def gather_cells(preds: Sequence[Tensor], cells: GridCells) -> Tensor:
    """Channel vectors ``(K, C)`` of the predictions at the given cells, in
    the cells' order (differentiable)."""
    rows = [
        gather_level_cells(pred, *where)
        for pred, where in zip(preds, cells.level_cells(len(preds)))
    ]
    # cells are grouped by level, so the concatenation keeps their order
    return torch.cat(rows)


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
        side = torch.minimum(hi1, hi2).sub_(torch.maximum(lo1,
                                                         lo2)).clamp_(min=0)
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
    """SimOTA dynamic-k matching, batched over images.

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

    # per column: (number of takers << 40) + sum of (taker row + 1); with a
    # single taker the sum is its row + 1
    takes_packed = torch.zeros(
        num_images * max_cands, dtype=torch.long, device=device)
    col_min_row = torch.full_like(takes_packed, torch.iinfo(torch.int64).max)
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
        # costs are >= 0 up to rounding; as non-negative floats their bit
        # patterns sort like the values: the cost in the high 32 bits and a
        # tie-breaker in the low ones
        cost_bits = cost.clamp_(min=0).view(torch.int32).to(
            torch.int64).bitwise_left_shift_(32)
        picked = torch.topk(
            cost_bits | column, num_top, dim=1, largest=False).indices
        takes = ((rank < dynamic_k[:, None]) &
                 (picked < cand_counts.index_select(0, image)[:, None]))
        # masked update without boolean indexing (no host synchronisation)
        gt_row = torch.arange(start, end, device=device)[:, None]
        image_base = (image * max_cands)[:, None]
        takes_packed.index_add_(
            0, (picked + image_base).view(-1),
            torch.where(takes, gt_row + ((1 << 40) + 1), 0).view(-1))
        # per column, the lowest cost and then the first ground truth
        col_min_row.scatter_reduce_(0, (image_base + column).view(-1),
                                    (cost_bits | gt_row).view(-1), 'amin')

    take_count = takes_packed >> 40
    owner = torch.where(take_count > 1, col_min_row & 0xFFFFFFFF,
                        (takes_packed & ((1 << 40) - 1)) - 1)
    owner = torch.where(take_count > 0, owner, -1)
    return owner.index_select(0, cand_flat)


class GridAssignerBase:
    """Assigner of ground truths to the cells of an anchor-based YOLO head.

    Candidates come from :func:`grid_candidates`; with ``topk=None`` every
    candidate is a match (YOLOv5 / the reference's ``ComputeLoss``),
    otherwise the candidates are matched by :func:`dynamic_k_matching` on the
    decoded predictions (the reference's ``ComputeLossOTA``): cost
    ``class BCE + iou_weight * -log(IoU + iou_eps)``, where the class BCE is
    that of ``p = sqrt(sigmoid(cls) * sigmoid(obj))`` against the one-hot
    class, and ground-truth boxes are converted to pixels with the input
    width (x, w) and height (y, h).

    :meth:`assign_grid` is the whole assignment; a loss that also needs the
    candidates' prediction rows calls :meth:`candidates` and :meth:`match`
    itself and gathers them once.

    Args:
        anchor_t (float): Largest box/anchor side ratio of a candidate.
        neighbour_bias (float): 0.5 (centre + 2 neighbour cells) or 1.0
            (centre + 4 neighbour cells).
        topk (int, optional): IoUs summed for the dynamic k; None: no
            matching, candidates are the matches.
        iou_weight (float): Weight of ``-log(IoU)`` in the matching cost.
        iou_eps (float): Added to the IoU inside the log.
        max_pair_bytes (int): Working memory of one chunk of the matching
            (the default keeps a chunk in the CPU caches; the result does not
            depend on it).
    """

    def __init__(self,
                 anchor_t: float = 4.0,
                 neighbour_bias: float = 0.5,
                 topk: Optional[int] = 10,
                 iou_weight: float = 3.0,
                 iou_eps: float = 1e-8,
                 max_pair_bytes: int = DEFAULT_MAX_PAIR_BYTES) -> None:
        if neighbour_bias not in (0.5, 1.0):
            raise ValueError(
                f'neighbour_bias must be 0.5 or 1.0, got {neighbour_bias}')
        self.anchor_t = anchor_t
        self.neighbour_bias = neighbour_bias
        self.topk = topk
        self.iou_weight = iou_weight
        self.iou_eps = iou_eps
        self.max_pair_bytes = max_pair_bytes

    def candidates(self, targets: Tensor,
                   grid_sizes: Sequence[Tuple[int, int]],
                   anchors_grid: Tensor) -> GridCells:
        """Candidate cells of the YOLOv5 rule (see :func:`grid_candidates`).
        """
        return grid_candidates(targets, grid_sizes, anchors_grid,
                               self.anchor_t, self.neighbour_bias)

    @torch.no_grad()
    @float32_region()
    def match(self,
              cands: GridCells,
              cand_rows: Tensor,
              targets: Tensor,
              anchors_grid: Tensor,
              strides: Sequence[int],
              input_hw: Tuple[int, int],
              num_images: int,
              topk: Optional[int] = None) -> Tuple[GridCells, Tensor]:
        """Select the matches among the candidates.

        Args:
            cands (GridCells): Candidates from :meth:`candidates`.
            cand_rows (Tensor): ``(K, 5 + nc)`` raw predictions at the
                candidates (:func:`gather_cells`).
            targets (Tensor): ``(n, 6)`` float rows ``[image, class, cx, cy,
                w, h]`` normalised to the input size.
            anchors_grid (Tensor): ``(nl, na, 2)`` anchors in grid cells.
            strides (Sequence[int]): Per level stride in pixels.
            input_hw (tuple[int, int]): Input height and width in pixels.
            num_images (int): Batch size.
            topk (int, optional): Overrides ``self.topk`` when given.

        Returns:
            tuple[GridCells, Tensor]: The matched cells with their
            ground-truth rows (without matching, i.e. ``topk`` None, all
            candidates in their order; otherwise per level by image then
            candidate order), and the index of each in ``cands``.
        """
        topk = self.topk if topk is None else topk
        if topk is None or len(cands) == 0:
            return cands, torch.arange(len(cands), device=cands.image.device)
        boxes, cls_base, cls_delta = self._candidate_costs(
            cand_rows.detach().float(), cands, anchors_grid, strides)
        height, width = input_hw
        gt_xywh = targets[:, 2:6] * targets.new_tensor(
            [width, height, width, height])
        gt_boxes = torch.cat(
            [gt_xywh[:, :2] - gt_xywh[:, 2:] / 2,
             gt_xywh[:, :2] + gt_xywh[:, 2:] / 2], 1)
        matched = dynamic_k_matching(
            gt_boxes,
            targets[:, 1].long(),
            targets[:, 0].long(),
            boxes,
            cands.image,
            cls_base,
            cls_delta,
            num_images=num_images,
            topk=topk,
            iou_weight=self.iou_weight,
            iou_eps=self.iou_eps,
            max_pair_bytes=self.max_pair_bytes)
        keep = torch.nonzero(matched >= 0, as_tuple=True)[0]
        # per level: by image, then candidate order (a stable sort)
        sort_key = (cands.level.index_select(0, keep) * num_images +
                    cands.image.index_select(0, keep))
        keep = keep.index_select(0, torch.argsort(sort_key, stable=True))
        return cands.with_target(matched).index(keep), keep

    @torch.no_grad()
    @float32_region()
    def assign_grid(self,
                    preds: Sequence[Tensor],
                    targets: Tensor,
                    anchors_grid: Tensor,
                    strides: Sequence[int],
                    input_hw: Tuple[int, int],
                    topk: Optional[int] = None) -> GridCells:
        """Assign ground truths to cells.

        Args:
            preds (Sequence[Tensor]): Per level raw predictions
                ``(bs, na, ny, nx, 5 + nc)``.
            targets (Tensor): ``(n, 6)`` rows ``[image, class, cx, cy, w,
                h]``, normalised to the input size; validated by the caller.
            anchors_grid (Tensor): ``(nl, na, 2)`` anchors in grid cells.
            strides (Sequence[int]): Per level stride in pixels.
            input_hw (tuple[int, int]): Input height and width in pixels.
            topk (int, optional): Overrides ``self.topk`` when given.

        Returns:
            GridCells: The matches. Without matching, in candidate order;
            with matching, per level by image then candidate order.
        """
        targets = targets.float()
        cands = self.candidates(targets, [tuple(p.shape[2:4]) for p in preds],
                                anchors_grid)
        if (self.topk if topk is None else topk) is None:
            return cands
        return self.match(cands, gather_cells(preds, cands), targets,
                          anchors_grid, strides, input_hw, preds[0].size(0),
                          topk)[0]

    @staticmethod
    def _candidate_costs(
            rows: Tensor, cands: GridCells, anchors_grid: Tensor,
            strides: Sequence[int]
    ) -> Tuple[Tensor, Tensor, Callable[[Tensor, Tensor], Tensor]]:
        """Decoded boxes (pixels, xyxy) and class-cost terms of candidates.

        The class cost is the BCE of ``p = sqrt(sigmoid(cls) *
        sigmoid(obj))`` against the one-hot target. Summed over classes it is
        ``base = -sum_j log(1 - p_j)`` plus ``delta(j) = log((1 - p_j) /
        p_j)`` at the target class ``j``; ``delta`` is returned as a function
        of (candidate index, class), evaluated only where needed.
        """
        stride = rows.new_tensor(strides).index_select(0, cands.level)[:,
                                                                        None]
        anchor = anchors_grid.view(-1, 2).index_select(
            0, cands.level * anchors_grid.size(1) + cands.anchor)
        grid = torch.stack([cands.grid_x, cands.grid_y], 1)
        # one sigmoid over whole contiguous rows is faster than on slices
        sig = rows.sigmoid()
        xy = (sig[:, :2] * 2. - 0.5 + grid) * stride
        wh = (sig[:, 2:4] * 2)**2 * anchor * stride
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
        prob = (sig[:, 5:] * sig[:, 4:5]).sqrt_()
        # keep both logs finite where a probability rounds to 0 or 1
        finfo = torch.finfo(prob.dtype)
        prob.clamp_(min=finfo.tiny, max=1. - finfo.eps / 2)
        # sum of the logs as the logs of products of up to 4 factors (each
        # >= 6e-8, so a product stays a normal float): a quarter of the logs
        num_classes = prob.size(1)
        group = next(g for g in (4, 2, 1) if num_classes % g == 0)
        factors = (1 - prob).view(-1, group, num_classes // group).unbind(1)
        product = factors[0]
        for factor in factors[1:]:
            product = product * factor
        cls_base = torch.log(product).sum(1).neg_()

        def cls_delta(cand_index: Tensor, label: Tensor) -> Tensor:
            # flat take: much faster than two-tensor indexing
            picked = torch.take(prob, cand_index * num_classes + label)
            return torch.log((1 - picked).div_(picked))

        return boxes, cls_base, cls_delta
