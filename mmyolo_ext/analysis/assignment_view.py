"""What the label assigner does with a batch: positives per ground truth,
level and head, and drawings of them.

The assignment is the loss's own (``ComputeLossOTA(...,
return_assignment=True)``), so it is exactly what training uses:

* with the model's predictions: the model's loss module (OTA's dynamic-k
  choice among the candidates; the auxiliary head's for P6 models);
* without predictions (``use_predictions=False``): a copy of the loss with
  the YOLOv5 candidate rule as assigner (every candidate a positive), the
  lead's ``anchor_t`` and neighbour bias, and the auxiliary assigner's for
  the auxiliary head.
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.registry import DefaultScope
from torch import Tensor

from mmyolo_ext.registry import SCOPE, TASK_UTILS

# Distinct colours (RGB) for ground truths, reused cyclically.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
           (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
           (170, 255, 195), (128, 128, 0), (0, 0, 128), (255, 225, 25))
CELL_ALPHA = 0.45  # opacity of a positive cell's fill


def gt_colour(index: int) -> Tuple[int, int, int]:
    """Colour of the ``index``-th ground truth of an image."""
    return PALETTE[index % len(PALETTE)]


@dataclass
class BatchAssignment:
    """Assignment of one batch.

    Attributes:
        targets (Tensor): ``(n, 6)`` loss targets ``[image, class, cx, cy,
            w, h]`` normalised to the input.
        input_hw (tuple[int, int]): Batch input height and width.
        strides (list[int]): Stride of each level.
        anchors (list): Per level ``[w, h]`` anchors in pixels.
        heads (dict): ``'lead'`` (and ``'aux'``): per level a dict of int64
            tensors ``image, anchor, grid_y, grid_x, target``.
        source (str): ``'predictions'`` or ``'candidate rule'``.
    """
    targets: Tensor
    input_hw: Tuple[int, int]
    strides: List[int]
    anchors: list
    heads: Dict[str, List[Dict[str, Tensor]]] = field(default_factory=dict)
    source: str = ''

    def image_targets(self, image: int) -> np.ndarray:
        """Rows of ``targets`` that belong to ``image``."""
        return np.nonzero(self.targets[:, 0].cpu().numpy() == image)[0]

    def gt_boxes_px(self, rows: Sequence[int]) -> np.ndarray:
        """``(k, 4)`` x1, y1, x2, y2 input pixels of target rows."""
        height, width = self.input_hw
        t = self.targets[list(rows)].cpu().double().numpy().reshape(-1, 6)
        scale = np.array([width, height])
        centre, size = t[:, 2:4] * scale, t[:, 4:6] * scale
        return np.concatenate([centre - size / 2, centre + size / 2], 1)


def candidate_rule_loss(loss_module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``loss_module`` whose assigners are the YOLOv5 candidate
    rule with the same ``anchor_t`` and neighbour bias as its own."""
    rule = copy.deepcopy(loss_module)
    with DefaultScope.overwrite_default_scope(SCOPE):
        for name in ('assigner', 'aux_assigner'):
            own = getattr(loss_module, name)
            setattr(
                rule, name,
                TASK_UTILS.build(
                    dict(
                        type='YOLOv5Assigner',
                        anchor_t=own.anchor_t,
                        neighbour_bias=own.neighbour_bias)))
    return rule


@torch.no_grad()
def assign_batch(model: torch.nn.Module, data_batch: dict,
                 use_predictions: bool) -> Tuple[BatchAssignment, Tensor]:
    """Run the model's loss assignment on a training batch.

    Args:
        model (nn.Module): A detector with an ``IDetectHead`` (``bbox_head``
            with a loss module) and its data preprocessor.
        data_batch (dict): A batch of the train dataloader.
        use_predictions (bool): Assign from the model's predictions (eval
            mode) instead of the candidate rule.

    Returns:
        tuple[BatchAssignment, Tensor]: The assignment and the preprocessed
        ``(bs, 3, H, W)`` inputs.
    """
    data = model.data_preprocessor(data_batch, training=True)
    inputs = data['inputs']
    head = model.bbox_head
    if head.loss_module is None:
        raise ValueError('the model head has no loss module (bbox_head.loss)'
                         ': its assignment cannot be shown')
    targets, input_hw = head.targets_from_samples(data['data_samples'],
                                                  inputs.device)
    height, width = input_hw
    with_aux = getattr(head.head_module, 'aux_convs', None) is not None
    if use_predictions:
        was_training = model.training
        model.eval()
        raw_maps = head(model.extract_feat(inputs))
        model.train(was_training)
        preds = [head.to_official_layout(m) for m in raw_maps]
        loss = head.loss_module
        source = 'predictions'
    else:
        channels = 5 + head.num_classes
        preds = [
            inputs.new_zeros(inputs.size(0), head.num_base_priors,
                             height // s, width // s, channels)
            for s in head.featmap_strides
        ] * (2 if with_aux else 1)
        loss = candidate_rule_loss(head.loss_module)
        source = 'candidate rule'
    out = loss(preds, targets, input_hw, head.anchor_sizes,
               return_assignment=True)
    heads = {'lead': out['assignment']}
    if 'assignment_aux' in out:
        heads['aux'] = out['assignment_aux']
    return BatchAssignment(
        targets=targets.cpu(),
        input_hw=input_hw,
        strides=[int(s) for s in head.featmap_strides],
        anchors=head.anchor_sizes.cpu().tolist(),
        heads={
            name: [{k: v.cpu()
                    for k, v in level.items()}
                   for level in levels]
            for name, levels in heads.items()
        },
        source=source), inputs


def positives_per_target(levels: List[Dict[str, Tensor]],
                         num_targets: int) -> np.ndarray:
    """``(num_targets, levels)`` number of positive (cell, anchor) entries
    of each ground truth on each level (an entry listed twice counts
    twice, as in the loss)."""
    counts = np.zeros((num_targets, len(levels)), dtype=np.int64)
    for i, level in enumerate(levels):
        np.add.at(counts[:, i], level['target'].numpy(), 1)
    return counts


def image_summary(assignment: BatchAssignment, image: int) -> dict:
    """Per ground truth of ``image``: class, box and positives per head
    and level; and the ground truths with no positive in some head."""
    rows = assignment.image_targets(image)
    boxes = assignment.gt_boxes_px(rows)
    counts = {
        name: positives_per_target(levels, len(assignment.targets))[rows]
        for name, levels in assignment.heads.items()
    }
    gts = []
    for k, row in enumerate(rows):
        gt = dict(
            index=k,
            label=int(assignment.targets[row, 1]),
            box_xyxy=[round(float(v), 1) for v in boxes[k]],
            size_wh=[round(float(boxes[k, 2] - boxes[k, 0]), 1),
                     round(float(boxes[k, 3] - boxes[k, 1]), 1)])
        for name, table in counts.items():
            gt[f'{name}_positives_per_level'] = table[k].tolist()
        gts.append(gt)
    no_positive = {
        name: [k for k in range(len(rows)) if table[k].sum() == 0]
        for name, table in counts.items()
    }
    return dict(
        source=assignment.source,
        input_hw=list(assignment.input_hw),
        strides=assignment.strides,
        ground_truths=gts,
        without_positives=no_positive)


def image_rgb(inputs: Tensor, data_preprocessor, image: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a preprocessed input (mean/std undone)."""
    img = inputs[image].detach().float().cpu()
    mean = getattr(data_preprocessor, 'mean', None)
    std = getattr(data_preprocessor, 'std', None)
    if std is not None:
        img = img * std.view(-1, 1, 1).cpu()
    if mean is not None:
        img = img + mean.view(-1, 1, 1).cpu()
    img = img.clamp(0, 255).byte().permute(1, 2, 0).numpy()
    if not getattr(data_preprocessor, '_channel_conversion', True):
        img = img[..., ::-1]  # inputs kept BGR
    return np.ascontiguousarray(img)


def draw_level(image: np.ndarray, assignment: BatchAssignment, head: str,
               level: int, image_index: int) -> np.ndarray:
    """One panel: the image dimmed, the level's grid, each positive cell
    filled with its ground truth's colour (``CELL_ALPHA``), the matched
    anchor drawn around the cell centre, and the ground-truth boxes."""
    stride = assignment.strides[level]
    height, width = image.shape[:2]
    panel = (image.astype(np.float64) * 0.6 + 255 * 0.4).astype(np.uint8)
    for x in range(0, width, stride):
        cv2.line(panel, (x, 0), (x, height - 1), (200, 200, 200), 1)
    for y in range(0, height, stride):
        cv2.line(panel, (0, y), (width - 1, y), (200, 200, 200), 1)
    rows = assignment.image_targets(image_index)
    slot = {int(row): k for k, row in enumerate(rows)}
    cells = assignment.heads[head][level]
    mine = (cells['image'] == image_index).numpy()
    entries = [(int(cells['target'][i]), int(cells['anchor'][i]),
                int(cells['grid_y'][i]), int(cells['grid_x'][i]))
               for i in np.nonzero(mine)[0]]
    fill = panel.astype(np.float64)
    for target, gy, gx in sorted({(t, gy, gx) for t, _, gy, gx in entries}):
        y0, x0 = gy * stride, gx * stride
        colour = np.array(gt_colour(slot[target]), dtype=np.float64)
        region = fill[y0 + 1:y0 + stride, x0 + 1:x0 + stride]
        region[:] = region * (1 - CELL_ALPHA) + colour * CELL_ALPHA
    panel = fill.round().astype(np.uint8)
    for target, anchor, gy, gx in set(entries):
        aw, ah = assignment.anchors[level][anchor]
        cx, cy = (gx + 0.5) * stride, (gy + 0.5) * stride
        cv2.rectangle(panel, (int(cx - aw / 2), int(cy - ah / 2)),
                      (int(cx + aw / 2), int(cy + ah / 2)),
                      gt_colour(slot[target]), 1)
    for k, box in enumerate(assignment.gt_boxes_px(rows)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(panel, (x1, y1), (x2, y2), gt_colour(k), 2)
    label = f'{head} P{level} stride {stride}: {len(entries)} positives'
    cv2.putText(panel, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def draw_image(inputs: Tensor, data_preprocessor,
               assignment: BatchAssignment, image_index: int) -> np.ndarray:
    """All panels of one image: a row per head (lead, aux), a column per
    level. Returns an RGB uint8 array."""
    image = image_rgb(inputs, data_preprocessor, image_index)
    rows = [
        np.concatenate([
            draw_level(image, assignment, head, level, image_index)
            for level in range(len(assignment.strides))
        ], 1) for head in assignment.heads
    ]
    return np.concatenate(rows, 0)


def write_png(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), rgb[..., ::-1]):
        raise OSError(f'could not write {path}')


def format_summary(name: str, summary: dict) -> str:
    """Plain-text table of :func:`image_summary`."""
    heads = [k[:-len('_positives_per_level')]
             for k in (summary['ground_truths'][0]
                       if summary['ground_truths'] else {})
             if k.endswith('_positives_per_level')]
    lines = [f'{name} ({summary["source"]}, input {summary["input_hw"]}, '
             f'strides {summary["strides"]}):']
    for gt in summary['ground_truths']:
        per_head = '; '.join(
            f'{h} ' + '/'.join(map(str, gt[f'{h}_positives_per_level']))
            for h in heads)
        lines.append(f'  gt {gt["index"]:3d} class {gt["label"]:3d} size '
                     f'{gt["size_wh"][0]:.0f}x{gt["size_wh"][1]:.0f}: '
                     f'positives per level {per_head}')
    for head, missing in summary['without_positives'].items():
        if missing:
            lines.append(f'  {head}: NO positive for gt {missing}')
    if not summary['ground_truths']:
        lines.append('  (no ground truths)')
    return '\n'.join(lines)

