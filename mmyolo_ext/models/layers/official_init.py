"""The official YOLOv7 weight initialization of convolutions."""
import torch.nn as nn


def reset_conv_parameters(module: nn.Module) -> None:
    """Give every ``nn.Conv2d`` inside ``module`` PyTorch's default init.

    The official models keep ``nn.Conv2d``'s own initialization (uniform
    weights with bound ``1 / sqrt(fan_in)``); mmcv's ``ConvModule`` replaces
    it by a Kaiming normal init whose standard deviation is 0.8x-4.9x the
    default (median 2.4x over the convs of yolov7-tiny and L, measured by
    tests/test_recipe_defects.py). Followed by BatchNorm, a larger
    weight scale is a smaller effective learning rate, so a from-scratch run
    would not be the official one. BatchNorm layers are left as they are.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
