"""Speed switches of a detector's convolutions: the ``channels_last`` memory
format and ``torch.compile`` of the backbone, neck and head convolutions.

Both change how the convolutions run, never what they compute (up to float
rounding), and neither changes parameter names, so checkpoints move freely
between models with and without them.
"""
import copy
from typing import Callable, List, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

CompileCfg = Union[bool, dict, None]


def to_channels_last(module: nn.Module) -> nn.Module:
    """Lay out every 4-D parameter and buffer of ``module`` as
    ``channels_last`` (in place; the parameter objects are kept, so an
    optimizer built before or after sees the same tensors).

    Later in-place writes (weight init, ``load_state_dict``, EMA updates)
    keep the layout; a convolution whose weight is ``channels_last`` also
    gives a ``channels_last`` output, so the layout propagates through the
    network from the first layer.
    """
    return module.to(memory_format=torch.channels_last)


def as_channels_last(inputs: Tensor) -> Tensor:
    """``inputs`` in ``channels_last`` layout (a no-op when it is already,
    and for tensors that are not 4-D)."""
    if inputs.dim() != 4:
        return inputs
    return inputs.contiguous(memory_format=torch.channels_last)


def raw_maps_of(detector: nn.Module, inputs: Tensor) -> List[Tensor]:
    """The head's raw maps of ``inputs``: backbone, neck and head convs.

    A free function of the detector rather than a method, so that one
    compiled version serves every copy of a detector: a deep copy (the EMA
    model) shares the compiled function and passes itself, where a compiled
    bound method would keep running the original's weights.
    """
    return detector.bbox_head(detector.extract_feat(inputs))


def compile_raw_maps(
        compile_cfg: CompileCfg
) -> Optional[Callable[[nn.Module, Tensor], List[Tensor]]]:
    """``torch.compile`` of :func:`raw_maps_of`, or None when disabled.

    Args:
        compile_cfg (bool | dict | None): False / None: no compilation;
            True: ``torch.compile`` defaults; a dict: its keyword arguments
            (``mode``, ``backend``, ``dynamic``, ``options``, ...).

    The loss is not compiled: its matching has data-dependent shapes (the
    number of matched cells), which would break the graph or recompile
    every iteration.
    """
    if not compile_cfg:
        return None
    if compile_cfg is True:
        compile_cfg = {}
    if not isinstance(compile_cfg, dict):
        raise TypeError('compile_convs must be a bool or a dict of '
                        'torch.compile arguments, got '
                        f'{type(compile_cfg).__name__}')
    return torch.compile(raw_maps_of, **copy.deepcopy(compile_cfg))
