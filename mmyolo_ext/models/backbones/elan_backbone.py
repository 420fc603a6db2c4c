"""The YOLOv7 backbone (ELAN / E-ELAN stages), all seven official sizes."""
from typing import List, Optional, Sequence, Union

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmyolo.models.backbones import BaseBackbone

from mmyolo_ext.registry import MODELS
from ..layers import (YOLOV7_ACT_CFG, YOLOV7_NORM_CFG, YOLOV7_TINY_ACT_CFG,
                      DownC, EELANBlock, ELANBlock, MPConvBlock, ReOrg,
                      OfficialConvInitMixin, reset_conv_parameters)


@MODELS.register_module()
class ELANBackbone(OfficialConvInitMixin, BaseBackbone):
    """Backbone of the official YOLOv7 models, layer for layer.

    ``arch_settings[arch]``:

    - ``reorg``: start with a space-to-depth :class:`ReOrg` (P6 models).
    - ``stem``: ``(out_channels, kernel, stride)`` of each stem conv.
    - ``num_convs`` / ``concat_stride``: the ELAN chain length and which of
      its outputs are concatenated (see :class:`ELANBlock`);
      ``num_elans``: 2 for the E-ELAN of yolov7-e6e.
    - ``stages``: per stage ``[transition, out_channels,
      transition_channels, mid_channels]``: the down-sampling transition
      (``None``; ``'maxpool'``; ``'mp'``, :class:`MPConvBlock`; ``'conv'``,
      a 3x3 stride-2 conv; ``'downc'``, :class:`DownC`), the stage's output
      channels, the transition's output channels (the ELAN's input) and the
      ELAN's 1x1 / chain width.

    Stage ``i`` (1-based) has stride ``2 ** (i + 1)``; ``out_indices`` count
    the stem as 0, so (2, 3, 4) are P3-P5 and (2, 3, 4, 5) P3-P6.

    Args:
        arch (str): One of 'tiny', 'l', 'x', 'w6', 'e6', 'd6', 'e6e'.
        input_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int], optional): Output from which stages.
            Defaults to P3-P5 (P5 models) or P3-P6 (P6 models).
        frozen_stages (int): Freeze the stem and the first
            ``frozen_stages`` stages (0: the stem only; -1: nothing): their
            parameters get ``requires_grad=False`` and their BatchNorms stay
            in eval mode, as MMDetection's backbones. The official ``--freeze
            N`` (the first N official layers) equals, for the whole stem and
            stages 1-4 (5 for P6): tiny N = 2, 8, 15, 22, 29; L 4, 12, 25, 38,
            51; X 4, 14, 29, 44, 59; W6 2, 11, 20, 29, 38, 47; E6 2, 13, 24,
            35, 46, 57; D6 2, 15, 28, 41, 54, 67; E6E 2, 23, 45, 67, 89, 111
            (frozen_stages 0, 1, 2, ...). Defaults to -1.
        plugins (list[dict], optional): Stage plugins, as in MMYOLO.
        norm_cfg (dict): Normalization config. Defaults to BN with the
            official eps 1e-3 and momentum 0.03.
        act_cfg (dict, optional): Activation config. Defaults to the
            official one: LeakyReLU(0.1) for 'tiny', SiLU otherwise.
        norm_eval (bool): Keep BatchNorm layers in eval mode while
            training. Defaults to False.
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    arch_settings = {
        'tiny': dict(
            reorg=False, stem=[(32, 3, 2), (64, 3, 2)],
            num_convs=2, concat_stride=1, num_elans=1,
            stages=[[None, 64, 64, 32], ['maxpool', 128, 64, 64],
                    ['maxpool', 256, 128, 128], ['maxpool', 512, 256, 256]]),
        'l': dict(
            reorg=False, stem=[(32, 3, 1), (64, 3, 2), (64, 3, 1),
                               (128, 3, 2)],
            num_convs=4, concat_stride=2, num_elans=1,
            stages=[[None, 256, 128, 64], ['mp', 512, 256, 128],
                    ['mp', 1024, 512, 256], ['mp', 1024, 1024, 256]]),
        'x': dict(
            reorg=False, stem=[(40, 3, 1), (80, 3, 2), (80, 3, 1),
                               (160, 3, 2)],
            num_convs=6, concat_stride=2, num_elans=1,
            stages=[[None, 320, 160, 64], ['mp', 640, 320, 128],
                    ['mp', 1280, 640, 256], ['mp', 1280, 1280, 256]]),
        'w6': dict(
            reorg=True, stem=[(64, 3, 1)],
            num_convs=4, concat_stride=2, num_elans=1,
            stages=[['conv', 128, 128, 64], ['conv', 256, 256, 128],
                    ['conv', 512, 512, 256], ['conv', 768, 768, 384],
                    ['conv', 1024, 1024, 512]]),
        'e6': dict(
            reorg=True, stem=[(80, 3, 1)],
            num_convs=6, concat_stride=2, num_elans=1,
            stages=[['downc', 160, 160, 64], ['downc', 320, 320, 128],
                    ['downc', 640, 640, 256], ['downc', 960, 960, 384],
                    ['downc', 1280, 1280, 512]]),
        'd6': dict(
            reorg=True, stem=[(96, 3, 1)],
            num_convs=8, concat_stride=2, num_elans=1,
            stages=[['downc', 192, 192, 64], ['downc', 384, 384, 128],
                    ['downc', 768, 768, 256], ['downc', 1152, 1152, 384],
                    ['downc', 1536, 1536, 512]]),
        'e6e': dict(
            reorg=True, stem=[(80, 3, 1)],
            num_convs=6, concat_stride=2, num_elans=2,
            stages=[['downc', 160, 160, 64], ['downc', 320, 320, 128],
                    ['downc', 640, 640, 256], ['downc', 960, 960, 384],
                    ['downc', 1280, 1280, 512]]),
    }

    def __init__(self,
                 arch: str = 'l',
                 input_channels: int = 3,
                 out_indices: Optional[Sequence[int]] = None,
                 frozen_stages: int = -1,
                 plugins: Union[dict, List[dict], None] = None,
                 norm_cfg: ConfigType = YOLOV7_NORM_CFG,
                 act_cfg: OptConfigType = None,
                 norm_eval: bool = False,
                 init_cfg: OptMultiConfig = None) -> None:
        if arch not in self.arch_settings:
            raise KeyError(f'ELANBackbone: unknown arch {arch!r}, expected '
                           f'one of {sorted(self.arch_settings)}')
        self.arch = arch
        self.setting = self.arch_settings[arch]
        if not -1 <= frozen_stages <= len(self.setting['stages']):
            raise ValueError(
                f'ELANBackbone({arch!r}): frozen_stages={frozen_stages}, '
                f'expected -1 (none), 0 (stem) ... '
                f'{len(self.setting["stages"])} (all stages)')
        if act_cfg is None:
            act_cfg = YOLOV7_TINY_ACT_CFG if arch == 'tiny' else YOLOV7_ACT_CFG
        if out_indices is None:
            out_indices = tuple(range(2, len(self.setting['stages']) + 1))
        super().__init__(
            self.setting['stages'],
            input_channels=input_channels,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            plugins=plugins,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            norm_eval=norm_eval,
            init_cfg=init_cfg)
        # the official init: PyTorch's default convs (OfficialConvInitMixin)
        reset_conv_parameters(self)

    @property
    def out_channels(self) -> List[int]:
        """Channels of each output, in ``out_indices`` order."""
        channels = [self.setting['stem'][-1][0]] + [
            stage[1] for stage in self.setting['stages']
        ]
        return [channels[i] for i in self.out_indices]

    def build_stem_layer(self) -> nn.Module:
        """The optional ReOrg and the stem convs."""
        layers: List[nn.Module] = []
        in_channels = self.input_channels
        if self.setting['reorg']:
            layers.append(ReOrg())
            in_channels *= 4
        for out_channels, kernel, stride in self.setting['stem']:
            layers.append(
                ConvModule(
                    in_channels,
                    out_channels,
                    kernel,
                    stride=stride,
                    padding=kernel // 2,
                    norm_cfg=self.norm_cfg,
                    act_cfg=self.act_cfg))
            in_channels = out_channels
        return nn.Sequential(*layers)

    def _stage_in_channels(self, stage_idx: int) -> int:
        if stage_idx == 0:
            return self.setting['stem'][-1][0]
        return self.setting['stages'][stage_idx - 1][1]

    def build_stage_layer(self, stage_idx: int, setting: list) -> list:
        """A transition (except for the first P5 stage) and an ELAN."""
        transition, out_channels, transition_channels, mid_channels = setting
        in_channels = self._stage_in_channels(stage_idx)
        conv_kwargs = dict(norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        layers: List[nn.Module] = []
        if transition is None or transition == 'maxpool':
            if transition_channels != in_channels:
                raise ValueError(f'stage {stage_idx + 1}: a {transition} '
                                 'transition keeps the channels')
            if transition == 'maxpool':
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif transition == 'mp':
            layers.append(
                MPConvBlock(in_channels, transition_channels, **conv_kwargs))
        elif transition == 'conv':
            layers.append(
                ConvModule(
                    in_channels,
                    transition_channels,
                    3,
                    stride=2,
                    padding=1,
                    **conv_kwargs))
        elif transition == 'downc':
            layers.append(
                DownC(in_channels, transition_channels, **conv_kwargs))
        else:
            raise ValueError(f'stage {stage_idx + 1}: unknown transition '
                             f'{transition!r}')
        elan_kwargs = dict(
            in_channels=transition_channels,
            mid_channels=mid_channels,
            chain_channels=mid_channels,
            out_channels=out_channels,
            num_convs=self.setting['num_convs'],
            concat_stride=self.setting['concat_stride'],
            **conv_kwargs)
        if self.setting['num_elans'] > 1:
            layers.append(
                EELANBlock(num_elans=self.setting['num_elans'], **elan_kwargs))
        else:
            layers.append(ELANBlock(**elan_kwargs))
        return layers
