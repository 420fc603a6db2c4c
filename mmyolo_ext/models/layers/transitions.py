"""Down-sampling transitions of YOLOv7: MP, DownC and ReOrg."""
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor

from mmyolo_ext.registry import MODELS
from .conv_defaults import YOLOV7_ACT_CFG, YOLOV7_NORM_CFG


@MODELS.register_module()
class MPConvBlock(BaseModule):
    """The "MP" transition: stride-2 down-sampling by two branches.

    Output: concat[3x3 s2 conv(1x1 conv(x)), 1x1 conv(maxpool 2x2(x))], each
    branch with ``out_channels // 2`` channels.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels (even).
        hidden_channels (int, optional): Output channels of the 1x1 conv
            before the strided conv. Defaults to ``out_channels // 2``.
        norm_cfg (dict): Normalization config.
        act_cfg (dict): Activation config.
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 hidden_channels: Optional[int] = None,
                 norm_cfg: ConfigType = YOLOV7_NORM_CFG,
                 act_cfg: ConfigType = YOLOV7_ACT_CFG,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if out_channels % 2:
            raise ValueError(f'{type(self).__name__} needs an even '
                             f'out_channels, got {out_channels}')
        branch_channels = out_channels // 2
        if hidden_channels is None:
            hidden_channels = branch_channels
        conv_kwargs = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)
        # registered in the order of the official MP layers
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool_conv = ConvModule(in_channels, branch_channels, 1,
                                    **conv_kwargs)
        self.down_convs = nn.Sequential(
            ConvModule(in_channels, hidden_channels, 1, **conv_kwargs),
            ConvModule(
                hidden_channels,
                branch_channels,
                3,
                stride=2,
                padding=1,
                **conv_kwargs))

    def forward(self, x: Tensor) -> Tensor:
        """Down-sample ``x`` by 2."""
        return torch.cat([self.down_convs(x),
                          self.pool_conv(self.pool(x))], dim=1)


@MODELS.register_module()
class DownC(MPConvBlock):
    """The "DownC" transition of yolov7-e6/d6/e6e.

    The MP transition with a full-width 1x1 conv before the strided conv;
    it is one layer (``cv1``, ``cv2``, ``cv3``) in the official models.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels (even).
        **kwargs: Other arguments of :class:`MPConvBlock`.
    """

    # official sub-module name -> ours, for the weight converter
    official_key_map: Dict[str, str] = {
        'cv1': 'down_convs.0',
        'cv2': 'down_convs.1',
        'cv3': 'pool_conv',
    }

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__(
            in_channels, out_channels, hidden_channels=in_channels, **kwargs)


@MODELS.register_module()
class ReOrg(nn.Module):
    """Space-to-depth (yolov7 P6 stem): (B, C, H, W) -> (B, 4C, H/2, W/2).

    Channel blocks in the official order: (even row, even col), (odd row,
    even col), (even row, odd col), (odd row, odd col).
    """

    def forward(self, x: Tensor) -> Tensor:
        """Rearrange each 2x2 pixel block into channels."""
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            raise ValueError('ReOrg needs an even input height and width, '
                             f'got {tuple(x.shape[-2:])}')
        return torch.cat([
            x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
            x[..., 1::2, 1::2]
        ], dim=1)
