"""Gradient accumulation that sums, as YOLOv7's train.py does."""
import logging
from typing import Dict, List, Optional, Union

import torch
from mmengine.device import (is_cuda_available, is_mlu_available,
                             is_musa_available, is_npu_available)
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.utils.dl_utils import has_batch_norm

from mmyolo_ext.registry import OPTIM_WRAPPERS
from .nonfinite_step_guard import NonFiniteStepGuard


@OPTIM_WRAPPERS.register_module()
class SummedAccumulationOptimWrapper(NonFiniteStepGuard, OptimWrapper):
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
    iterations as an uninterrupted one; the gradients accumulated since that
    step are saved with it (MMEngine's wrappers lose them), so a run
    resumed inside an accumulation window goes on with the same sum.

    A step whose loss or gradients are not finite is skipped, logged and
    counted (see :class:`NonFiniteStepGuard`).

    Args:
        max_consecutive_skips (int): Skipped non-finite steps in a row that
            stop the run (0: never). Defaults to 10.
        **kwargs: The arguments of :class:`OptimWrapper`.
    """

    _LAST_STEP_KEY = 'accumulation_last_step'
    _PENDING_KEY = 'accumulated_gradients'  # of an open window

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

    def _params(self) -> List[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups
                for p in group['params']]

    def _window_open(self) -> bool:
        return self._inner_count > self._last_step_count

    def share_pending_gradients(self) -> None:
        """With several processes, give each the mean of the gradients
        accumulated since the last step (what DDP's next synchronised
        backward averages anyway), so the first process's checkpoint holds
        the window of all. Call on every process before a save."""
        if get_world_size() == 1 or not self._window_open():
            return
        for param in self._params():
            if param.grad is not None:
                all_reduce(param.grad, op='mean')

    def state_dict(self) -> Dict:
        state = super().state_dict()
        state[self._LAST_STEP_KEY] = self._last_step_count
        if self._window_open():
            state[self._PENDING_KEY] = [
                None if p.grad is None else p.grad.detach().cpu().clone()
                for p in self._params()
            ]
        return state

    def load_state_dict(self, state_dict: Dict) -> None:
        state_dict = dict(state_dict)
        self._last_step_count = int(state_dict.pop(self._LAST_STEP_KEY, 0))
        pending = state_dict.pop(self._PENDING_KEY, None)
        super().load_state_dict(state_dict)
        for param, grad in zip(self._params(), pending or ()):
            param.grad = None if grad is None else grad.to(
                param.device, param.dtype)


def _accelerator_available() -> bool:
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def autocast_is_native() -> bool:
    """Whether mixed precision runs in hardware here: an accelerator
    (float16), or a CPU with bfloat16 instructions (AVX512-BF16 or AMX),
    where oneDNN's bfloat16 convolutions are faster than float32 ones;
    without them bfloat16 is emulated and slower."""
    if _accelerator_available():
        return True
    probes = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


class _AmpOptimWrapperWithCPU(AmpOptimWrapper):
    """:class:`AmpOptimWrapper`, which MMEngine builds only with an
    accelerator, also on a CPU-only machine: there autocast runs bfloat16
    (the only CPU autocast type), with a disabled loss scaler (bfloat16 has
    the range of float32; non-finite gradients are then checked by
    :class:`NonFiniteStepGuard`)."""

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Optional[Union[str, torch.dtype]] = None,
                 use_fsdp: bool = False,
                 **kwargs) -> None:
        if _accelerator_available():
            super().__init__(
                loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp,
                **kwargs)
            return
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, dtype)
        if dtype not in (None, torch.bfloat16):
            raise ValueError(
                f'AMP with dtype {dtype}: float16 needs CUDA; without it '
                'autocast runs bfloat16 on the CPU (dtype=None or '
                '"bfloat16")')
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        self.cast_dtype = torch.bfloat16
        print_log(
            'AMP without CUDA: bfloat16 autocast on the CPU, no loss scaling',
            logger='current',
            level=logging.INFO)


@OPTIM_WRAPPERS.register_module()
class AmpSummedAccumulationOptimWrapper(SummedAccumulationOptimWrapper,
                                        _AmpOptimWrapperWithCPU):
    """:class:`SummedAccumulationOptimWrapper` with mixed precision: the
    summed accumulation and the non-finite step guard above, with
    :class:`AmpOptimWrapper`'s autocast and loss scaling (``tools/train.py
    --amp`` picks it for configs that use the summed wrapper): float16 with
    a dynamic GradScaler on CUDA; bfloat16 without a scaler on a machine
    without CUDA.

    Args:
        **kwargs: The arguments of :class:`SummedAccumulationOptimWrapper`
            and :class:`AmpOptimWrapper` (``loss_scale``, ``dtype``, ...).
    """
