"""EMA updated once per optimizer step, as YOLOv7's train.py does."""
from typing import Optional

from mmengine.hooks import EMAHook
from mmengine.runner import Runner

from mmyolo_ext.registry import HOOKS


@HOOKS.register_module()
class OptimStepEMAHook(EMAHook):
    """:class:`EMAHook` that updates the average only after an optimizer
    step.

    MMEngine's hook updates the EMA after every iteration. With gradient
    accumulation most iterations leave the weights unchanged, and the
    official recipe updates its EMA only when the optimizer steps, so the
    ramp ``0.9999 * (1 - exp(-updates / 2000))`` counts optimizer steps.
    This hook watches the optimizer (a step post-hook) and skips the other
    iterations. Without accumulation it behaves exactly as ``EMAHook``.

    Args:
        **kwargs: The arguments of :class:`EMAHook` (``ema_type``,
            ``momentum``, ``gamma``, ``update_buffers``, ...).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stepped = False
        self._step_hook_handle = None

    def _on_step(self, optimizer, args, kwargs) -> None:
        self._stepped = True

    def before_train(self, runner: Runner) -> None:
        super().before_train(runner)
        if self._step_hook_handle is not None:
            self._step_hook_handle.remove()
        self._step_hook_handle = (
            runner.optim_wrapper.optimizer.register_step_post_hook(
                self._on_step))

    def after_train_iter(self,
                         runner: Runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not self._stepped:
            return
        self._stepped = False
        super().after_train_iter(runner, batch_idx, data_batch, outputs)

    def after_train(self, runner: Runner) -> None:
        if self._step_hook_handle is not None:
            self._step_hook_handle.remove()
            self._step_hook_handle = None
