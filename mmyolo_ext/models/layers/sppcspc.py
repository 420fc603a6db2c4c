"""Spatial pyramid pooling with a cross-stage partial connection."""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor

from mmyolo_ext.registry import MODELS
from .conv_defaults import YOLOV7_ACT_CFG, YOLOV7_NORM_CFG


@MODELS.register_module()
class SPPCSPCBlock(BaseModule):
    """SPPCSPC, the first layer of the YOLOv7 neck.

    Main branch: 1x1 -> 3x3 -> 1x1 conv, then max-pools of several sizes
    (stride 1) concatenated with their input, then 1x1 -> 3x3 conv.
    Shortcut branch: one 1x1 conv of the input. Output: 1x1 conv of
    concat[main, shortcut]. All hidden widths equal ``out_channels``.

    ``compact=True`` is yolov7-tiny's variant, written inline in its yaml:
    no 3x3 convs, and the pooled maps are concatenated largest kernel first,
    followed by their input. Its convs are separate official layers, so it
    has no ``official_key_map``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output (and hidden) channels.
        kernel_sizes (Sequence[int]): Max-pool kernel sizes.
            Defaults to (5, 9, 13).
        compact (bool): Build the yolov7-tiny variant. Defaults to False.
        norm_cfg (dict): Normalization config.
        act_cfg (dict): Activation config.
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    _full_key_map: Dict[str, str] = {
        'cv1': 'main_convs.0',
        'cv2': 'shortcut_conv',
        'cv3': 'main_convs.1',
        'cv4': 'main_convs.2',
        'cv5': 'fuse_convs.0',
        'cv6': 'fuse_convs.1',
        'cv7': 'final_conv',
    }

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_sizes: Sequence[int] = (5, 9, 13),
                 compact: bool = False,
                 norm_cfg: ConfigType = YOLOV7_NORM_CFG,
                 act_cfg: ConfigType = YOLOV7_ACT_CFG,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.compact = compact
        # official sub-module name -> ours (None: convs are official layers)
        self.official_key_map: Optional[Dict[str, str]] = (
            None if compact else self._full_key_map)
        hidden = out_channels
        conv_kwargs = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)
        # the shortcut first: the order of the official tiny layers
        self.shortcut_conv = ConvModule(in_channels, hidden, 1, **conv_kwargs)
        main_convs = [ConvModule(in_channels, hidden, 1, **conv_kwargs)]
        if not compact:
            main_convs += [
                ConvModule(hidden, hidden, 3, padding=1, **conv_kwargs),
                ConvModule(hidden, hidden, 1, **conv_kwargs)
            ]
        self.main_convs = nn.Sequential(*main_convs)
        self.pools = nn.ModuleList(
            nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
            for k in kernel_sizes)
        pooled_channels = hidden * (len(kernel_sizes) + 1)
        fuse_convs = [ConvModule(pooled_channels, hidden, 1, **conv_kwargs)]
        if not compact:
            fuse_convs.append(
                ConvModule(hidden, hidden, 3, padding=1, **conv_kwargs))
        self.fuse_convs = nn.Sequential(*fuse_convs)
        self.final_conv = ConvModule(2 * hidden, out_channels, 1,
                                     **conv_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x`` at several scales and merge with its shortcut."""
        feat = self.main_convs(x)
        pooled = [pool(feat) for pool in self.pools]
        parts = pooled[::-1] + [feat] if self.compact else [feat] + pooled
        main = self.fuse_convs(torch.cat(parts, dim=1))
        return self.final_conv(
            torch.cat([main, self.shortcut_conv(x)], dim=1))
