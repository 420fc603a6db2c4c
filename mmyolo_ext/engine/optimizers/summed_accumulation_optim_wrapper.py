"""Gradient accumulation that sums, as YOLOv7's train.py does."""
import logging
from typing import Dict

import torch
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.utils.dl_utils import has_batch_norm

from mmyolo_ext.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class SummedAccumulationOptimWrapper(OptimWrapper):
    """An :class:`OptimWrapper` whose accumulated gradients are summed.

    The official train.py steps the optimizer once ``accumulate`` iterations
    have passed since its last step (``accumulate = round(64 / batch)``),
    and sums their gradients: its loss is already multiplied by the batch
    size, so one step sees the gradient of the nominal batch of 64 images
    and the hyp-file learning rate applies unchanged. MMEngine's
    :class:`OptimWrapper` divides the loss by ``accumulative_counts``, which
    would cut the effective learning rate by that factor, and steps on
    multiples of it, which breaks when the count changes during warm-up
    (see :class:`YOLOv7ParamSchedulerHook`, which ramps it from 1).

    Across processes the gradients are summed too (the loss is multiplied by
    the world size before DDP averages them), as the official train.py does.

    Here ``accumulative_counts`` may change at any iteration: the optimizer
    steps when at least that many backward passes happened since the last
    step (and at the last iteration of training). The iteration of the last
    step is saved in :meth:`state_dict`, so a resumed run steps at the same
    iterations as an uninterrupted one (gradients accumulated before the
    interruption are lost, as everywhere in MMEngine).

    Args:
        **kwargs: The arguments of :class:`OptimWrapper`.
    """

    _LAST_STEP_KEY = 'accumulation_last_step'

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._last_step_count = 0  # ``_inner_count`` at the last step

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        # summed over iterations, not averaged; and over processes: DDP
        # averages gradients, the official train.py multiplies its loss by
        # the world size to undo that
        return loss * get_world_size()

    def should_update(self) -> bool:
        return (self._inner_count - self._last_step_count >=
                self._accumulative_counts
                or self._inner_count == self._max_counts)

    def should_sync(self) -> bool:
        # called before ``backward`` increments the count
        return (self._inner_count + 1 - self._last_step_count >=
                self._accumulative_counts
                or self._inner_count + 1 == self._max_counts)

    def step(self, **kwargs) -> None:
        super().step(**kwargs)
        self._last_step_count = self._inner_count

    def initialize_count_status(self, model: torch.nn.Module,
                                init_counts: int, max_counts: int) -> None:
        # MMEngine's version warns when ``init_counts`` is no multiple of the
        # count, which means nothing here: steps follow the last step
        self._inner_count = init_counts
        self._max_counts = max_counts
        self._remainder_counts = max_counts % self._accumulative_counts
        if self._last_step_count > init_counts:  # not from this run's past
            self._last_step_count = init_counts
        if has_batch_norm(model) and self._accumulative_counts > 1:
            print_log(
                'Gradient accumulation with BatchNorm: statistics come from '
                'each batch, as in the official recipe',
                logger='current',
                level=logging.INFO)

    def state_dict(self) -> Dict:
        state = super().state_dict()
        state[self._LAST_STEP_KEY] = self._last_step_count
        return state

    def load_state_dict(self, state_dict: Dict) -> None:
        state_dict = dict(state_dict)
        self._last_step_count = int(state_dict.pop(self._LAST_STEP_KEY, 0))
        super().load_state_dict(state_dict)


@OPTIM_WRAPPERS.register_module()
class AmpSummedAccumulationOptimWrapper(SummedAccumulationOptimWrapper,
                                        AmpOptimWrapper):
    """:class:`SummedAccumulationOptimWrapper` with mixed precision: the
    summed accumulation above, with :class:`AmpOptimWrapper`'s autocast and
    loss scaling (``tools/train.py --amp`` picks it for configs that use the
    summed wrapper).

    Args:
        **kwargs: The arguments of :class:`AmpOptimWrapper` (``loss_scale``,
            ``dtype``, ...).
    """
