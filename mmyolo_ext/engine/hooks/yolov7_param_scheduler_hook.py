"""YOLOv7's learning-rate, momentum and accumulation schedule."""
from typing import Optional

import numpy as np
from mmengine.runner import Runner
from mmyolo.engine.hooks import YOLOv5ParamSchedulerHook

from mmyolo_ext.engine.optimizers import SummedAccumulationOptimWrapper
from mmyolo_ext.registry import HOOKS


@HOOKS.register_module()
class YOLOv7ParamSchedulerHook(YOLOv5ParamSchedulerHook):
    """MMYOLO's :class:`YOLOv5ParamSchedulerHook` with the official epoch
    timing and the warm-up of gradient accumulation.

    Inherited, unchanged: warm-up over ``max(warmup_epochs * iters_per_epoch,
    warmup_mim_iter)`` iterations, the bias group (index 2) from
    ``warmup_bias_lr`` and the others from 0 to the scheduled lr, momentum
    from ``warmup_momentum`` to the optimizer's; then the one-cycle
    ``'cosine'`` (or ``'linear'``) factor per epoch, down to ``lr_factor``.

    Changed:

    * After epoch ``e`` the lr is set for epoch ``e + 1``, as the official
      ``scheduler.step()`` does (MMYOLO sets the factor of epoch ``e``, one
      epoch late, so its last epoch does not reach ``lr_factor``).
    * During warm-up the number of accumulated iterations ramps linearly
      from 1 to the optimizer wrapper's ``accumulative_counts``, as the
      official ``accumulate`` does; it needs a
      :class:`SummedAccumulationOptimWrapper` (a count that changes between
      steps); with another wrapper the count is left as configured.

    Args:
        **kwargs: The arguments of :class:`YOLOv5ParamSchedulerHook`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._final_accumulate: Optional[int] = None

    def _warmup_iters(self, runner: Runner) -> int:
        return max(
            round(self.warmup_epochs * len(runner.train_dataloader)),
            self.warmup_mim_iter)

    def before_train(self, runner: Runner) -> None:
        super().before_train(runner)
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, SummedAccumulationOptimWrapper):
            self._final_accumulate = wrapper._accumulative_counts

    def before_train_iter(self,
                          runner: Runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        super().before_train_iter(runner, batch_idx, data_batch)
        if self._final_accumulate is None:
            return
        warmup_iters = self._warmup_iters(runner)
        accumulate = self._final_accumulate
        if runner.iter <= warmup_iters:
            accumulate = max(
                1,
                int(
                    np.interp(runner.iter, [0, warmup_iters],
                              [1, self._final_accumulate]).round()))
        runner.optim_wrapper._accumulative_counts = accumulate

    def after_train_epoch(self, runner: Runner) -> None:
        if not self._warmup_end:
            return
        factor = self.scheduler_fn(runner.epoch + 1)
        for base_lr, group in zip(self._base_lr,
                                  runner.optim_wrapper.optimizer.param_groups):
            group['lr'] = base_lr * factor
