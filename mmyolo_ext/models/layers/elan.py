"""ELAN and E-ELAN aggregation blocks of YOLOv7."""
from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor

from mmyolo_ext.registry import MODELS
from .conv_defaults import YOLOV7_ACT_CFG, YOLOV7_NORM_CFG


@MODELS.register_module()
class ELANBlock(BaseModule):
    """Efficient layer aggregation block (ELAN, and ELAN-H of the neck).

    Two 1x1 convs read the input: ``short_conv`` and ``main_conv``. A chain of
    ``num_convs`` 3x3 convs runs on ``main_conv``'s output (the first maps
    ``mid_channels`` to ``chain_channels``). The concatenation, in the
    official channel order, is [chain outputs selected from the last one
    backwards every ``concat_stride`` convs, ``main_conv``, ``short_conv``],
    fused by a 1x1 ``final_conv``.

    ``concat_stride=2`` is the backbone ELAN (e.g. L: four 3x3 convs, outputs
    #4 and #2 kept), ``concat_stride=1`` the neck's ELAN-H (all chain outputs
    kept) and yolov7-tiny's block. Sub-modules are registered in the order of
    the official layers, which the weight converter relies on.

    Args:
        in_channels (int): Input channels.
        mid_channels (int): Output channels of the two 1x1 convs.
        chain_channels (int): Output channels of each 3x3 conv of the chain.
        out_channels (int): Output channels of the block.
        num_convs (int): Number of 3x3 convs in the chain.
        concat_stride (int): Keep every ``concat_stride``-th chain output,
            counted from the last one. Defaults to 1.
        norm_cfg (dict): Normalization config.
        act_cfg (dict): Activation config.
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    def __init__(self,
                 in_channels: int,
                 mid_channels: int,
                 chain_channels: int,
                 out_channels: int,
                 num_convs: int,
                 concat_stride: int = 1,
                 norm_cfg: ConfigType = YOLOV7_NORM_CFG,
                 act_cfg: ConfigType = YOLOV7_ACT_CFG,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_convs < 1 or concat_stride < 1:
            raise ValueError('ELANBlock needs num_convs >= 1 and '
                             f'concat_stride >= 1, got {num_convs} and '
                             f'{concat_stride}')
        conv_kwargs = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.short_conv = ConvModule(in_channels, mid_channels, 1,
                                     **conv_kwargs)
        self.main_conv = ConvModule(in_channels, mid_channels, 1,
                                    **conv_kwargs)
        self.chain = nn.ModuleList(
            ConvModule(
                mid_channels if i == 0 else chain_channels,
                chain_channels,
                3,
                padding=1,
                **conv_kwargs) for i in range(num_convs))
        # chain outputs that enter the concatenation, last one first
        self.concat_indices = tuple(range(num_convs - 1, -1, -concat_stride))
        concat_channels = (2 * mid_channels +
                           len(self.concat_indices) * chain_channels)
        self.final_conv = ConvModule(concat_channels, out_channels, 1,
                                     **conv_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """Aggregate the chain outputs of ``x``."""
        short = self.short_conv(x)
        feat = self.main_conv(x)
        chain_outs = []
        for conv in self.chain:
            chain_outs.append(conv(chain_outs[-1] if chain_outs else feat))
        parts = [chain_outs[i] for i in self.concat_indices]
        return self.final_conv(torch.cat(parts + [feat, short], dim=1))

    def forward_with_aux_tap(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Return the output twice: a single ELAN's auxiliary-head tap is its
        output (see :meth:`EELANBlock.forward_with_aux_tap`)."""
        out = self(x)
        return out, out


@MODELS.register_module()
class EELANBlock(BaseModule):
    """Extended ELAN (yolov7-e6e): ELANs on the same input, outputs summed.

    Args:
        num_elans (int): Number of parallel ELAN blocks. Defaults to 2.
        init_cfg (dict or list[dict], optional): Initialization config.
        **elan_kwargs: Arguments of each :class:`ELANBlock`.
    """

    def __init__(self,
                 num_elans: int = 2,
                 init_cfg: OptMultiConfig = None,
                 **elan_kwargs) -> None:
        super().__init__(init_cfg=init_cfg)
        self.elans = nn.ModuleList(
            ELANBlock(**elan_kwargs) for _ in range(num_elans))

    def forward(self, x: Tensor) -> Tensor:
        """Sum of the ELAN outputs."""
        return self.forward_with_aux_tap(x)[0]

    def forward_with_aux_tap(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Return the sum and the last ELAN's own output, which is what the
        official yolov7-e6e feeds to its auxiliary head."""
        outs = [elan(x) for elan in self.elans]
        total = outs[0]
        for out in outs[1:]:
            total = total + out
        return total, outs[-1]
