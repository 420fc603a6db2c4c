"""YOLOv7 loss: CIoU box, IoU-targeted objectness and one-hot class BCE on
the cells chosen by a grid assigner (OTA by default)."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import DefaultScope
from torch import Tensor

from mmyolo_ext.registry import MODELS, SCOPE, TASK_UTILS
from ..float32_region import float32_region
from ..task_modules.assigners.ota_core import GridCells, gather_cells
from .ciou import ciou_xywh
from .dense_objectness import rows_and_objectness

# Objectness weight of each level, by number of levels (official values).
_DEFAULT_OBJ_LEVEL_WEIGHTS = {3: [4.0, 1.0, 0.4], 4: [4.0, 1.0, 0.25, 0.06]}


def build_assigner(cfg: Union[dict, object]) -> object:
    """An assigner from its TASK_UTILS config (returned as is when already
    built); plain type names are ours whatever the caller's default scope
    (under 'mmdet', 'SimOTAAssigner' would be MMDetection's)."""
    if not isinstance(cfg, dict):
        return cfg
    with DefaultScope.overwrite_default_scope(SCOPE):
        return TASK_UTILS.build(cfg)


@MODELS.register_module()
class ComputeLossOTA(BaseModule):
    """Loss of YOLOv7 (the official ``ComputeLossOTA`` and, with two heads,
    ``ComputeLossAuxOTA``), batched.

    Per level ``i`` and matched row (a cell matched twice counts twice):

    * box: ``mean(1 - CIoU)`` of the decoded prediction
      ``(2 sigmoid(t_xy) - 0.5, (2 sigmoid(t_wh))^2 * anchor)`` against the
      ground truth, in cells relative to the matched cell;
    * objectness: BCE-with-logits averaged over all ``bs * na * ny * nx``
      cells, target ``clamp(CIoU, 0)`` (detached) at matched cells (the last
      matched row of a cell wins) and 0 elsewhere, weighted by
      ``obj_level_weights[i]``;
    * class (only with ``num_classes > 1``): BCE-with-logits against the
      one-hot class (smoothed by ``label_smoothing``), averaged over
      ``rows * num_classes``.

    Given ``2 * nl`` prediction tensors (lead then auxiliary head), the
    auxiliary head is assigned by ``aux_assigner`` from the **lead**
    predictions, its terms are computed on its own predictions and added
    with weight ``aux_weight``, and the lead assignment uses
    ``aux_lead_topk`` (as the reference's ``ComputeLossAuxOTA``, which uses
    the top 20 IoUs for both heads).

    Finally ``box``, ``obj`` and ``cls`` are multiplied by their gains and by
    the batch size, so that their sum is the reference's returned ``loss``.

    Gains: with ``scale_gains=True`` the given values are those of the
    official hyp files and are scaled as the reference's ``train.py`` does:
    ``box *= 3 / nl``, ``cls *= nc / 80 * 3 / nl``,
    ``obj *= (nominal_img_size / 640) ** 2 * 3 / nl``; with
    ``scale_gains=False`` they are used as given.

    The assigners are built by :class:`IDetectHead` from its ``train_cfg``
    (``assigner``, ``aux_assigner``); ``assigner=YOLOv5Assigner`` gives the
    reference's non-OTA ``ComputeLoss`` (every candidate cell is a match).

    Predictions of any strides are accepted. The cheapest is the zero-copy
    view of a convolution output, ``x.view(bs, na, 5 + nc, ny, nx).permute(0,
    1, 3, 4, 2)``: its objectness channel is contiguous (at batch 16 x 640 the
    forward pass is about 2x faster than on a ``.contiguous()`` copy, and the
    copy itself costs more than the whole loss).

    Deviation from the reference, by design: ground-truth boxes are
    converted to pixels with the input width (x, w) and height (y, h); the
    reference uses the height for both (same result on square inputs).

    Args:
        num_classes (int): Number of classes.
        strides (Sequence[int]): Per level stride in pixels.
        anchors (Sequence, optional): Per level a list of ``[w, h]`` anchors
            in pixels, used by calls that pass none (a loss used without a
            head; :class:`IDetectHead` passes its ``anchor_sizes`` at every
            call).
        box_gain (float): Box loss gain (hyp ``box``).
        obj_gain (float): Objectness loss gain (hyp ``obj``).
        cls_gain (float): Class loss gain (hyp ``cls``).
        scale_gains (bool): Apply the reference's gain scaling rules.
        nominal_img_size (int): Training size used by the objectness gain
            rule (640 for P5 and tiny models, 1280 for P6).
        obj_level_weights (Sequence[float], optional): Objectness weight per
            level; default ``[4, 1, 0.4]`` (3 levels), ``[4, 1, 0.25, 0.06]``
            (4 levels).
        assigner (dict | object): The lead-head assigner, built (the head
            passes the one of its ``train_cfg``) or its config (TASK_UTILS;
            plain type names are looked up in the ``mmyolo_ext`` scope
            first). Defaults to ``SimOTAAssigner``.
        aux_assigner (dict | object): The auxiliary-head assigner, built or
            its config. Defaults to ``V7AuxAssigner``.
        aux_weight (float): Weight of the auxiliary head's terms.
        aux_lead_topk (int): Dynamic-k top-k of the lead assignment when an
            auxiliary head is given.
        label_smoothing (float): The official ``--label-smoothing`` eps:
            class targets ``1 - eps / 2`` (the ground truth's class) and
            ``eps / 2`` (the others) in the class loss; the assignment's
            class cost keeps the one-hot targets, as the official one.
            Defaults to 0.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 num_classes: int,
                 strides: Sequence[int],
                 anchors: Optional[Sequence[Sequence[Sequence[float]]]] = None,
                 box_gain: float = 0.05,
                 obj_gain: float = 0.7,
                 cls_gain: float = 0.3,
                 scale_gains: bool = True,
                 nominal_img_size: int = 640,
                 obj_level_weights: Optional[Sequence[float]] = None,
                 assigner: Union[dict, object] = dict(type='SimOTAAssigner'),
                 aux_assigner: Union[dict,
                                     object] = dict(type='V7AuxAssigner'),
                 aux_weight: float = 0.25,
                 aux_lead_topk: int = 20,
                 label_smoothing: float = 0.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not 0 <= label_smoothing <= 1:
            raise ValueError('label_smoothing must be in [0, 1], got '
                             f'{label_smoothing}')
        # the official smooth_BCE: positive and negative class targets
        self.cls_targets = (1.0 - 0.5 * label_smoothing,
                            0.5 * label_smoothing)
        num_levels = len(strides)
        if obj_level_weights is None:
            if num_levels not in _DEFAULT_OBJ_LEVEL_WEIGHTS:
                raise ValueError('obj_level_weights must be given for '
                                 f'{num_levels} levels')
            obj_level_weights = _DEFAULT_OBJ_LEVEL_WEIGHTS[num_levels]
        if len(obj_level_weights) != num_levels:
            raise ValueError(f'{len(obj_level_weights)} obj_level_weights '
                             f'for {num_levels} levels')
        self.num_classes = num_classes
        self.num_levels = num_levels
        self.strides = [int(s) for s in strides]
        self.obj_level_weights = [float(w) for w in obj_level_weights]
        if scale_gains:
            box_gain *= 3. / num_levels
            cls_gain *= num_classes / 80. * 3. / num_levels
            obj_gain *= (nominal_img_size / 640.)**2 * 3. / num_levels
        self.box_gain, self.obj_gain, self.cls_gain = (box_gain, obj_gain,
                                                       cls_gain)
        self.default_anchors = None
        if anchors is not None:
            self.default_anchors = self._checked_anchors(anchors)
        self.assigner = build_assigner(assigner)
        self.aux_assigner = build_assigner(aux_assigner)
        self.aux_weight = aux_weight
        self.aux_lead_topk = aux_lead_topk

    def _checked_anchors(self, anchors: Sequence) -> Tensor:
        """``anchors`` as a ``(levels, na, 2)`` float32 pixel tensor."""
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        if anchors.dim() != 3 or anchors.size(2) != 2 or anchors.size(
                0) != self.num_levels:
            raise ValueError(
                f'anchors must be per level ({self.num_levels} levels) a '
                f'list of [w, h] pairs, got shape {tuple(anchors.shape)}')
        return anchors

    @float32_region()
    def forward(self,
                preds: Sequence[Tensor],
                targets: Tensor,
                input_hw: Tuple[int, int],
                anchors: Optional[Tensor] = None,
                return_assignment: bool = False) -> Dict[str, object]:
        """Compute the loss.

        Args:
            preds (Sequence[Tensor]): Per level raw predictions
                ``(bs, na, ny, nx, 5 + nc)``, channels ``[tx, ty, tw, th,
                obj, cls...]``; ``2 * nl`` tensors with an auxiliary head
                (lead levels first).
            targets (Tensor): ``(n, 6)`` rows ``[image, class, cx, cy, w,
                h]``, the box normalised to the input size (x, w by the
                width; y, h by the height).
            input_hw (tuple[int, int]): Input height and width in pixels.
            anchors (Tensor, optional): ``(nl, na, 2)`` anchor ``[w, h]`` in
                pixels; the ``anchors`` given at construction when None.
            return_assignment (bool): Also return the matched cells.

        Returns:
            dict: ``loss_box``, ``loss_obj``, ``loss_cls`` (gain- and
            batch-size-scaled); the log variables ``nonfinite_box``,
            ``nonfinite_obj``, ``nonfinite_cls`` (see
            :meth:`_nonfinite_report`); with ``return_assignment``,
            ``assignment``: per level a dict of int64 tensors ``image,
            anchor, grid_y, grid_x, target`` (``target`` = row of
            ``targets``), and with an auxiliary head ``assignment_aux``.
        """
        if anchors is None:
            if self.default_anchors is None:
                raise ValueError('ComputeLossOTA was built without anchors; '
                                 'pass them to the call')
            anchors = self.default_anchors
        else:
            anchors = self._checked_anchors(anchors.detach())
        self._check_preds(preds, anchors.size(1))
        batch_size = preds[0].size(0)
        targets = self._checked_targets(targets, batch_size,
                                        preds[0].device)
        nl = self.num_levels
        lead_preds = list(preds[:nl])
        with_aux = len(preds) == 2 * nl
        grid_sizes = [tuple(p.shape[2:4]) for p in lead_preds]
        anchors_grid = anchors.to(preds[0].device) / torch.tensor(
            self.strides, dtype=torch.float32,
            device=preds[0].device).view(-1, 1, 1)

        # lead head: gather the candidates' rows once, for the matching and
        # (the matched ones) for the loss
        cands = self.assigner.candidates(targets, grid_sizes, anchors_grid)
        cand_rows, lead_obj = rows_and_objectness(lead_preds, cands)
        lead_topk = (
            self.aux_lead_topk
            if with_aux and self.assigner.topk is not None else None)
        lead_cells, lead_index = self.assigner.match(
            cands, cand_rows, targets, anchors_grid, self.strides, input_hw,
            batch_size, lead_topk)
        head_cells = [lead_cells]
        head_rows = [cand_rows.index_select(0, lead_index)]
        dense_obj = [lead_obj]
        if with_aux:
            # the auxiliary assignment is made on the lead predictions
            aux_cands = self.aux_assigner.candidates(targets, grid_sizes,
                                                     anchors_grid)
            with torch.no_grad():
                aux_cand_rows = gather_cells(lead_preds, aux_cands)
            aux_cells, _ = self.aux_assigner.match(aux_cands, aux_cand_rows,
                                                   targets, anchors_grid,
                                                   self.strides, input_hw,
                                                   batch_size)
            aux_rows, aux_obj = rows_and_objectness(
                preds[nl:], aux_cells)
            head_cells.append(aux_cells)
            head_rows.append(aux_rows)
            dense_obj.append(aux_obj)

        box, obj, cls = self._level_terms(preds, head_cells, head_rows,
                                          torch.cat(dense_obj), targets,
                                          anchors_grid)
        head_weight = box.new_tensor([1.0, self.aux_weight][:len(head_cells)])
        obj_weight = head_weight[:, None] * box.new_tensor(
            self.obj_level_weights)
        losses: Dict[str, object] = dict(
            loss_box=(box * head_weight[:, None]).sum() *
            (self.box_gain * batch_size),
            loss_obj=(obj * obj_weight).sum() * (self.obj_gain * batch_size),
            loss_cls=(cls * head_weight[:, None]).sum() *
            (self.cls_gain * batch_size))
        losses.update(self._nonfinite_report(box, obj, cls))
        if return_assignment:
            losses['assignment'] = lead_cells.split_levels(nl)
            if with_aux:
                losses['assignment_aux'] = aux_cells.split_levels(nl)
        return losses

    def _level_terms(self, preds: Sequence[Tensor],
                     head_cells: List[GridCells], head_rows: List[Tensor],
                     dense_obj: Tensor, targets: Tensor,
                     anchors_grid: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Unweighted box, objectness and class terms, each ``(heads, nl)``.

        The matched rows of all heads and levels are processed together;
        per-(head, level) means are segment sums divided by segment sizes.
        ``dense_obj`` is the mean ``softplus(objectness)`` of every (head,
        level): the objectness BCE before the matched cells' targets.
        """
        nl = self.num_levels
        num_heads = len(head_cells)
        num_segments = num_heads * nl
        if num_heads == 1:
            cells, rows, segment = head_cells[0], head_rows[0], head_cells[
                0].level
        else:
            cells = GridCells(*(torch.cat(fields) for fields in zip(
                *(c.fields() for c in head_cells))))
            rows = torch.cat(head_rows)
            device = rows.device
            segment = cells.level + torch.repeat_interleave(
                torch.arange(num_heads, device=device) * nl,
                torch.tensor([len(c) for c in head_cells], device=device))
        rows = rows.float()
        zero = dense_obj.new_zeros(num_segments)
        if rows.size(0) == 0:
            return (zero.view(num_heads, nl), dense_obj.view(num_heads, nl),
                    zero.view(num_heads, nl))
        count = zero.index_add(0, segment, torch.ones_like(rows[:, 0]))

        # box: CIoU in cells, relative to the matched cell
        level_shape = torch.tensor([p.shape[1:4] for p in preds[:nl]],
                                   device=rows.device).index_select(
                                       0, cells.level)  # na, ny, nx
        level_wh = level_shape[:, [2, 1]].to(rows)
        matched = targets.index_select(0, cells.target)
        grid = torch.stack([cells.grid_x, cells.grid_y], 1)
        target_box = torch.cat([
            matched[:, 2:4] * level_wh - grid, matched[:, 4:6] * level_wh
        ], 1)
        sig = rows[:, :4].sigmoid()
        anchors = anchors_grid.view(-1, 2).index_select(
            0, cells.level * anchors_grid.size(1) + cells.anchor)
        pred_box = torch.cat(
            [sig[:, :2] * 2. - 0.5, (sig[:, 2:] * 2)**2 * anchors], 1)
        ciou = ciou_xywh(pred_box, target_box)
        box = zero.index_add(0, segment, 1.0 - ciou) / count.clamp(min=1)

        # objectness: BCE(x, t) = softplus(x) - x * t; one target per cell,
        # the last matched row's
        cell = ((cells.image * level_shape[:, 0] + cells.anchor) *
                level_shape[:, 1] + cells.grid_y) * level_shape[:, 2] + \
            cells.grid_x
        num_cells = max(p[..., 4].numel() for p in preds[:nl])
        key = segment * num_cells + cell
        order = torch.argsort(key, stable=True)
        sorted_key = key.index_select(0, order)
        is_last = torch.ones_like(sorted_key, dtype=torch.bool)
        is_last[:-1] = sorted_key[1:] != sorted_key[:-1]
        last = order[is_last]
        numel = rows.new_tensor(
            [p[..., 4].numel() for p in preds[:num_segments]])
        obj_target = ciou.detach().index_select(0, last).clamp_(min=0)
        obj = dense_obj - zero.index_add(
            0, segment.index_select(0, last),
            rows[:, 4].index_select(0, last) * obj_target) / numel

        # class: BCE against the (smoothed) one-hot class, mean over rows
        # and classes
        cls = zero
        if self.num_classes > 1:
            positive, negative = self.cls_targets
            cls_target = torch.full_like(rows[:, 5:], negative)
            cls_target.scatter_(1, matched[:, 1:2].long(), positive)
            cls_rows = F.binary_cross_entropy_with_logits(
                rows[:, 5:], cls_target, reduction='none').sum(1)
            cls = zero.index_add(0, segment, cls_rows) / (
                count.clamp(min=1) * self.num_classes)
        return (box.view(num_heads, nl), obj.view(num_heads, nl),
                cls.view(num_heads, nl))

    def _check_preds(self, preds: Sequence[Tensor], num_anchors: int) -> None:
        """Raise a ValueError naming the prediction that has a bad shape."""
        if len(preds) not in (self.num_levels, 2 * self.num_levels):
            raise ValueError(
                f'expected {self.num_levels} prediction tensors (or '
                f'{2 * self.num_levels} with an auxiliary head), got '
                f'{len(preds)}')
        channels = 5 + self.num_classes
        batch_size = preds[0].size(0) if preds[0].dim() else -1
        for i, pred in enumerate(preds):
            if (pred.dim() != 5 or pred.size(0) != batch_size
                    or pred.size(1) != num_anchors
                    or pred.size(4) != channels):
                raise ValueError(
                    f'prediction {i} has shape {tuple(pred.shape)}; expected '
                    f'({batch_size}, {num_anchors}, ny, nx, {channels})')
            if i >= self.num_levels and (pred.shape !=
                                         preds[i - self.num_levels].shape):
                raise ValueError(
                    f'auxiliary prediction {i} has shape {tuple(pred.shape)}'
                    ', lead has '
                    f'{tuple(preds[i - self.num_levels].shape)}')

    def _checked_targets(self, targets: Tensor, batch_size: int,
                         device: torch.device) -> Tensor:
        """Validate ``targets`` (one host synchronisation) and return them as
        float32 on ``device``; raise a ValueError naming the first bad row.
        """
        if targets.dim() != 2 or targets.size(1) != 6:
            raise ValueError('targets must be (n, 6) rows [image, class, cx, '
                             f'cy, w, h], got shape {tuple(targets.shape)}')
        targets = targets.detach().float().to(device)
        # image and class: integers in range (NaN compares unequal);
        # box: finite (x * 0 == 0) with non-negative sizes
        image_label = targets[:, :2]
        limits = targets.new_tensor([batch_size - 1, self.num_classes - 1])
        good = torch.cat([
            image_label == torch.minimum(image_label.floor().clamp_(min=0),
                                         limits),
            targets[:, 2:] * 0 == 0, targets[:, 4:] >= 0
        ], 1)
        if not bool(good.all()):
            row, column = torch.nonzero(~good)[0].tolist()
            values = targets[row].tolist()
            if column == 0:
                what = (f'image index {values[0]} is not an integer in '
                        f'[0, {batch_size})')
            elif column == 1:
                what = (f'class id {values[1]} is not an integer in '
                        f'[0, {self.num_classes})')
            else:
                what = (f'box {values[2:]} has a non-finite value or a '
                        'negative size')
            box = int((targets[:row, 0] == targets[row, 0]).sum())
            raise ValueError(
                f'bad target row {row} (image {values[0]:g}): {what} (box '
                f'{box} of that image in the batch)')
        return targets

    @staticmethod
    def _nonfinite_report(box: Tensor, obj: Tensor,
                          cls: Tensor) -> Dict[str, Tensor]:
        """Log variables that say which terms are not finite, without a host
        synchronisation: ``nonfinite_box``, ``nonfinite_obj`` and
        ``nonfinite_cls``, each ``(heads, levels)`` (head 0 the lead, 1 the
        auxiliary), the unweighted term where it is not finite and 0 where
        it is (so the logged mean is 0 on a healthy step).

        Their keys hold no ``'loss'``: MMEngine's ``parse_losses`` logs them
        but leaves them out of the total. The optimizer wrapper reads them
        to name the terms of a skipped step (``NonFiniteStepGuard``).
        """
        terms = torch.stack([box, obj, cls]).detach()  # (3, heads, nl)
        report = terms.masked_fill(torch.isfinite(terms), 0.0)
        return dict(
            nonfinite_box=report[0],
            nonfinite_obj=report[1],
            nonfinite_cls=report[2])
