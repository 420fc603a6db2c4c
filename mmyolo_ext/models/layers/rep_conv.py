"""RepConv: the re-parameterizable 3x3 conv of the YOLOv7 neck outputs."""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor

from mmyolo_ext.registry import MODELS
from .conv_defaults import YOLOV7_ACT_CFG, YOLOV7_NORM_CFG


def fold_batch_norm(weight: Tensor,
                    bn: nn.modules.batchnorm._BatchNorm,
                    bias: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv into its parameters.

    Args:
        weight (Tensor): Conv weight (C_out, C_in, kh, kw).
        bn (_BatchNorm): The BatchNorm applied to the conv output.
        bias (Tensor, optional): Conv bias. Defaults to None (zero).

    Returns:
        tuple[Tensor, Tensor]: Weight and bias of the equivalent conv.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    if bias is None:
        bias = torch.zeros_like(bn.running_mean)
    return (weight * scale.reshape(-1, 1, 1, 1),
            bn.bias + (bias - bn.running_mean) * scale)


@MODELS.register_module()
class RepConv(BaseModule):
    """Training-time multi-branch 3x3 conv, fused to one 3x3 conv to deploy.

    Training: act(BN(conv3x3(x)) + BN(conv1x1(x)) [+ BN(x)]), the identity
    branch existing only when the conv keeps the shape (same channels,
    stride 1). :meth:`switch_to_deploy` replaces the branches by a single
    biased 3x3 conv ``fused_conv`` computing the same function.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride. Defaults to 1.
        norm_cfg (dict): Normalization config.
        act_cfg (dict): Activation config.
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    # official sub-module name -> ours, for the weight converter
    official_key_map: Dict[str, str] = {
        'rbr_dense.0': 'dense_branch.conv',
        'rbr_dense.1': 'dense_branch.bn',
        'rbr_1x1.0': 'pointwise_branch.conv',
        'rbr_1x1.1': 'pointwise_branch.bn',
        'rbr_identity': 'identity_branch',
        'rbr_reparam': 'fused_conv',
    }

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 norm_cfg: ConfigType = YOLOV7_NORM_CFG,
                 act_cfg: ConfigType = YOLOV7_ACT_CFG,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.dense_branch = ConvModule(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=1,
            norm_cfg=norm_cfg,
            act_cfg=None)
        self.pointwise_branch = ConvModule(
            in_channels,
            out_channels,
            1,
            stride=stride,
            norm_cfg=norm_cfg,
            act_cfg=None)
        self.identity_branch = (
            build_norm_layer(norm_cfg, in_channels)[1]
            if in_channels == out_channels and stride == 1 else None)
        self.act = build_activation_layer(act_cfg)
        self.fused_conv: Optional[nn.Conv2d] = None

    def forward(self, x: Tensor) -> Tensor:
        """Apply the branches (or the fused conv after deployment)."""
        if self.fused_conv is not None:
            return self.act(self.fused_conv(x))
        out = self.dense_branch(x) + self.pointwise_branch(x)
        if self.identity_branch is not None:
            out = out + self.identity_branch(x)
        return self.act(out)

    def fused_weight_and_bias(self) -> Tuple[Tensor, Tensor]:
        """The 3x3 kernel and bias equivalent to the eval-mode branches."""
        weight, bias = fold_batch_norm(self.dense_branch.conv.weight,
                                       self.dense_branch.bn)
        weight_1x1, bias_1x1 = fold_batch_norm(
            self.pointwise_branch.conv.weight, self.pointwise_branch.bn)
        weight = weight + nn.functional.pad(weight_1x1, [1, 1, 1, 1])
        bias = bias + bias_1x1
        if self.identity_branch is not None:
            eye = torch.zeros_like(weight)
            channels = torch.arange(self.in_channels, device=weight.device)
            eye[channels, channels, 1, 1] = 1
            weight_id, bias_id = fold_batch_norm(eye, self.identity_branch)
            weight = weight + weight_id
            bias = bias + bias_id
        return weight, bias

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace the branches by one biased 3x3 conv (in place)."""
        if self.fused_conv is not None:
            return
        weight, bias = self.fused_weight_and_bias()
        fused = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            3,
            stride=self.stride,
            padding=1,
            bias=True).to(weight)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        del self.dense_branch, self.pointwise_branch, self.identity_branch
        self.identity_branch = None
        self.fused_conv = fused
