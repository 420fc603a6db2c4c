"""YOLOv7's parameter groups and nominal batch, as an optimizer constructor."""
from typing import List, Optional, Tuple

import torch.nn as nn
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmyolo.registry import OPTIM_WRAPPERS, OPTIMIZERS

from mmyolo_ext.registry import OPTIM_WRAPPER_CONSTRUCTORS


def split_param_groups(
    model: nn.Module
) -> Tuple[List[nn.Parameter], List[nn.Parameter], List[nn.Parameter]]:
    """Split parameters as YOLOv7's train.py does.

    Returns:
        tuple: ``(no_decay, decay, biases)``: normalization weights, implicit
        knowledge and any other parameter that is not a layer's ``weight``;
        the ``weight`` of every other layer (convolutions, linear); every
        ``bias``. Each parameter is in exactly one list.
    """
    no_decay, decay, biases = [], [], []
    for module in model.modules():
        is_norm = isinstance(module,
                             (nn.modules.batchnorm._NormBase, nn.GroupNorm,
                              nn.LayerNorm))
        # implicit layers (ImplicitA/M, ours and MMYOLO's) hold a learned
        # offset or scale, not a weight to shrink
        is_implicit = type(module).__name__.startswith('Implicit')
        for name, param in module.named_parameters(recurse=False):
            if name == 'bias':
                biases.append(param)
            elif name == 'weight' and not (is_norm or is_implicit):
                decay.append(param)
            else:
                no_decay.append(param)
    return no_decay, decay, biases


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class NominalBatchOptimConstructor:
    """Build YOLOv7's optimizer: three parameter groups, the weight decay
    scaled to the nominal batch and gradient accumulation up to it.

    Groups, in the official order (so the bias group is index 2, where
    MMYOLO's :class:`YOLOv5ParamSchedulerHook` and our
    :class:`YOLOv7ParamSchedulerHook` give it the warm-up bias lr):

    0. normalization weights, implicit layers: no weight decay;
    1. other layers' weights: weight decay;
    2. all biases: no weight decay.

    With a total batch ``B = batch_size_per_gpu * world_size`` and the
    nominal batch ``N`` (``base_total_batch_size``, 64), the official recipe
    accumulates ``max(round(N / B), 1)`` iterations per step and scales the
    weight decay by ``B * accumulate / N``. Both are computed here, once:
    the accumulation goes to the optimizer wrapper's ``accumulative_counts``
    (unless the config sets it, in which case that value is used for the
    scaling too). Use it with :class:`SummedAccumulationOptimWrapper` to sum
    the accumulated gradients as the official recipe does.

    Unlike MMYOLO's ``YOLOv7OptimWrapperConstructor`` this finds implicit
    layers by name (any ``Implicit*`` module), so it covers ours and
    MMYOLO's, and it applies the accumulation it scales for.

    Args:
        optim_wrapper_cfg (dict): The ``optim_wrapper`` config; its
            ``optimizer`` may hold ``batch_size_per_gpu``.
        paramwise_cfg (dict, optional): ``dict(base_total_batch_size=N)``.
            Defaults to N = 64.
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None) -> None:
        if not isinstance(optim_wrapper_cfg, dict):
            raise TypeError('NominalBatchOptimConstructor: optim_wrapper_cfg '
                            f'must be a dict, got {type(optim_wrapper_cfg)}')
        if 'optimizer' not in optim_wrapper_cfg:
            raise KeyError('NominalBatchOptimConstructor: optim_wrapper_cfg '
                           'has no "optimizer"')
        paramwise_cfg = dict(paramwise_cfg or {})
        self.base_total_batch_size = paramwise_cfg.pop(
            'base_total_batch_size', 64)
        if paramwise_cfg:
            raise KeyError('NominalBatchOptimConstructor: unknown '
                           f'paramwise_cfg keys {sorted(paramwise_cfg)}')
        if self.base_total_batch_size < 1:
            raise ValueError('NominalBatchOptimConstructor: '
                             'base_total_batch_size must be >= 1, got '
                             f'{self.base_total_batch_size}')
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = dict(self.optim_wrapper_cfg.pop('optimizer'))

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if is_model_wrapper(model):
            model = model.module
        optimizer_cfg = dict(self.optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        weight_decay = optimizer_cfg.pop('weight_decay', 0.)
        batch_size_per_gpu = optimizer_cfg.pop('batch_size_per_gpu', None)
        if batch_size_per_gpu is not None:
            total_batch_size = get_world_size() * batch_size_per_gpu
            accumulate = wrapper_cfg.setdefault(
                'accumulative_counts',
                max(round(self.base_total_batch_size / total_batch_size), 1))
            weight_decay *= (
                total_batch_size * accumulate / self.base_total_batch_size)
            print_log(
                f'Total batch {total_batch_size}, nominal batch '
                f'{self.base_total_batch_size}: accumulating {accumulate} '
                f'iterations per step, weight decay {weight_decay:.3g}',
                'current')

        no_decay, decay, biases = split_param_groups(model)
        optimizer_cfg['params'] = [
            dict(params=no_decay, weight_decay=0.),
            dict(params=decay, weight_decay=weight_decay),
            dict(params=biases, weight_decay=0.),
        ]
        print_log(
            f'Optimizer groups: {len(no_decay)} without decay (norm, '
            f'implicit), {len(decay)} weights with decay, {len(biases)} '
            'biases', 'current')
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(
            wrapper_cfg, default_args=dict(optimizer=optimizer))
