"""Candidates and matching of the anchor-based YOLO grid assigners.

Used by :class:`YOLOv5Assigner`, :class:`SimOTAAssigner` and
:class:`V7AuxAssigner`, in two steps:

* :func:`grid_candidates`: the YOLOv5 rule (anchor wh-ratio test, centre cell
  plus neighbour cells) that turns ground truths into candidate
  ``(image, anchor, cell)`` entries, one per (ground truth, anchor, offset);
* :meth:`GridAssignerBase.match`: SimOTA's dynamic-k matching of the
  candidates (:mod:`.dynamic_k_matching`) on the decoded predictions, or
  none (YOLOv5: every candidate is a match).

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
from .dynamic_k_matching import DEFAULT_MAX_PAIR_BYTES, dynamic_k_matching

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
        stride = rows.new_tensor(strides).index_select(0,
                                                       cands.level)[:, None]
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
