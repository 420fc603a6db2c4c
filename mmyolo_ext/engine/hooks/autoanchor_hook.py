"""Autoanchor before training, as the official train.py's check_anchors."""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmyolo_ext.models.task_modules.anchor_fitting import (AnchorCheck,
                                                           check_anchors)
from mmyolo_ext.registry import HOOKS

# Dataset wrappers whose items repeat their inner dataset's.
_REPEATING_WRAPPERS = ('RepeatDataset', 'ClassBalancedDataset')


def anchor_head(model: nn.Module) -> nn.Module:
    """The head of ``model`` that holds anchors (has ``set_anchors``)."""
    if is_model_wrapper(model):
        model = model.module
    head = getattr(model, 'bbox_head', None)
    if head is None or not hasattr(head, 'set_anchors'):
        raise TypeError(
            f'{type(model).__name__} has no anchor head (a bbox_head with '
            'set_anchors, e.g. IDetectHead); autoanchor needs one')
    return head


def dataset_label_sizes(dataset, img_size: int) -> List[np.ndarray]:
    """Per image the ``(n, 2)`` ground-truth sizes at the training size.

    Each image is scaled so that its long side is ``img_size`` (the
    official ``imgsz * shape / max(shape)``). Reads only ``get_data_info``:
    ``instances[*]['bbox']`` (x1, y1, x2, y2 pixels; ``ignore_flag`` 1 left
    out) and ``width``/``height`` or ``ori_shape``.

    Raises:
        ValueError: For an image without a size, naming it.
    """
    while (type(dataset).__name__ in _REPEATING_WRAPPERS
           and hasattr(dataset, 'dataset')):
        dataset = dataset.dataset
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    sizes = []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        if 'width' in info and 'height' in info:
            width, height = info['width'], info['height']
        elif 'ori_shape' in info:
            height, width = info['ori_shape'][:2]
        else:
            raise ValueError(
                f'image {index} ({info.get("img_path", "no path")}) of '
                f'{type(dataset).__name__} has neither width/height nor '
                'ori_shape: autoanchor needs the image sizes')
        if not width or not height or min(width, height) <= 0:
            raise ValueError(f'image {index} ({info.get("img_path")}) has '
                             f'size {width}x{height}')
        boxes = np.array([
            inst['bbox'] for inst in info.get('instances', [])
            if not inst.get('ignore_flag', 0)
        ], dtype=np.float64).reshape(-1, 4)
        scale = img_size / max(width, height)
        sizes.append((boxes[:, 2:] - boxes[:, :2]) * scale)
    return sizes


@HOOKS.register_module()
class AutoAnchorHook(Hook):
    """Check the anchors against the training labels before training, and
    refit them when they cover the labels poorly (the official
    ``check_anchors``, skipped by the official ``--noautoanchor``).

    The best possible recall (BPR: the fraction of labels some anchor can
    match under the assigner's ``anchor_t`` ratio rule) is measured on the
    training set's boxes at the training size, with a random 0.9-1.1 scale
    per image. Below ``bpr_threshold`` the anchors are refitted (k-means +
    genetic refinement, :func:`fit_anchors`) and replaced only when the new
    BPR is higher. New anchors go to the model (head priors, loss; the
    head's ``anchor_sizes`` buffer, so checkpoints carry them) and to the
    EMA model of an EMA hook. Skipped when resuming: the checkpoint's
    anchors are kept.

    Args:
        img_size (int | tuple): Training size (long side; for ``(w, h)``
            the larger).
        enabled (bool): False does nothing (``--noautoanchor``).
        anchor_t (float, optional): Ratio rule threshold; default the lead
            assigner's ``anchor_t`` (4.0 without one).
        bpr_threshold (float): Refit below this BPR (official 0.98).
        generations (int): Genetic refinement generations (official 1000).
        mutation_prob (float): Mutation probability (official 0.9).
        sigma (float): Mutation scale (official 0.1).
        scale_jitter (tuple[float, float]): Per-image scale range of the BPR
            measurement (official 0.9-1.1).
        seed (int, optional): Seed of the jitter, k-means and refinement
            (None: unseeded).
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 img_size: Union[int, Sequence[int]],
                 enabled: bool = True,
                 anchor_t: Optional[float] = None,
                 bpr_threshold: float = 0.98,
                 generations: int = 1000,
                 mutation_prob: float = 0.9,
                 sigma: float = 0.1,
                 scale_jitter: Tuple[float, float] = (0.9, 1.1),
                 seed: Optional[int] = 0) -> None:
        self.img_size = int(max(img_size) if isinstance(
            img_size, (tuple, list)) else img_size)
        self.enabled = enabled
        self.anchor_t = anchor_t
        self.bpr_threshold = bpr_threshold
        self.generations = generations
        self.mutation_prob = mutation_prob
        self.sigma = sigma
        self.scale_jitter = tuple(scale_jitter)
        self.seed = seed
        self.result: Optional[AnchorCheck] = None

    def before_train(self, runner: Runner) -> None:
        if not self.enabled:
            runner.logger.info('autoanchor: off (enabled=False)')
            return
        if getattr(runner, '_resume', False):
            runner.logger.info('autoanchor: resumed run, keeping the '
                               "checkpoint's anchors")
            return
        head = anchor_head(runner.model)
        self.result = self.check(runner.train_dataloader.dataset, head)
        self._log(runner, self.result)
        if self.result.replaced:
            head.set_anchors(self.result.anchors_after)
            for hook in runner.hooks:  # EMA copies of the model
                ema_model = getattr(hook, 'ema_model', None)
                if ema_model is not None:
                    anchor_head(ema_model.module).set_anchors(
                        self.result.anchors_after)
        runner.message_hub.update_info('autoanchor', vars(self.result))

    def check(self, dataset, head: nn.Module) -> AnchorCheck:
        """Measure (and refit) the anchors of ``head`` on ``dataset``."""
        anchor_t = self.anchor_t
        if anchor_t is None:
            assigner = getattr(getattr(head, 'loss_module', None),
                               'assigner', None)
            anchor_t = getattr(assigner, 'anchor_t', 4.0)
        return check_anchors(
            dataset_label_sizes(dataset, self.img_size),
            head.anchor_sizes.detach().cpu().numpy(),
            head.featmap_strides,
            anchor_t=anchor_t,
            bpr_threshold=self.bpr_threshold,
            scale_jitter=self.scale_jitter,
            generations=self.generations,
            mutation_prob=self.mutation_prob,
            sigma=self.sigma,
            rng=np.random.default_rng(self.seed))

    def _log(self, runner: Runner, result: AnchorCheck) -> None:
        def fmt(anchors):
            return ', '.join(
                '[' + ' '.join(f'{w:.0f},{h:.0f}' for w, h in level) + ']'
                for level in anchors)

        log = runner.logger.info
        log(f'autoanchor: {result.num_labels} labels at {self.img_size} px; '
            f'anchors {fmt(result.anchors_before)}: '
            f'{result.above_before:.2f} anchors/label past the ratio rule, '
            f'best possible recall (BPR) {result.bpr_before:.4f}')
        if result.bpr_after is not None:
            log(f'autoanchor: BPR below {self.bpr_threshold}: fitted anchors '
                f'(k-means + {self.generations} generations) reach BPR '
                f'{result.bpr_after:.4f}')
        if result.replaced:
            log(f'autoanchor: new anchors {fmt(result.anchors_after)} '
                'replace the configured ones (saved in checkpoints as '
                'bbox_head.anchor_sizes)')
        elif result.note:
            log(f'autoanchor: {result.note}')
