"""The official YOLOv7 weight initialization of convolutions."""
import torch.nn as nn


def reset_conv_parameters(module: nn.Module) -> None:
    """Give every ``nn.Conv2d`` inside ``module`` PyTorch's default init.

    The official models keep ``nn.Conv2d``'s own initialization (uniform
    weights with bound ``1 / sqrt(fan_in)``); mmcv's ``ConvModule`` replaces
    it by a Kaiming normal init whose standard deviation is 0.8x-4.9x the
    default (median 2.4x over the convs of yolov7-tiny and L, measured by
    tests/test_models/test_recipe_defects.py). Followed by BatchNorm, a larger weight
    scale is a smaller effective learning rate, so a from-scratch run would
    not be the official one. BatchNorm layers are left as they are.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()


class OfficialConvInitMixin:
    """``init_weights`` of an mmengine ``BaseModule`` that leaves its convs
    with PyTorch's default init (see :func:`reset_conv_parameters`); an
    ``init_cfg`` is applied instead when given. Like mmengine's, a second
    call changes nothing. Call :func:`reset_conv_parameters` at the end of
    ``__init__`` too, for models used without ``init_weights``."""

    def init_weights(self) -> None:
        already_initialized = self.is_init
        super().init_weights()
        if self.init_cfg is None and not already_initialized:
            reset_conv_parameters(self)
