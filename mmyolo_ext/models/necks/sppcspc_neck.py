"""The YOLOv7 neck: SPPCSPC, ELAN-H top-down and bottom-up paths."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor

from mmyolo_ext.registry import MODELS
from ..layers import (YOLOV7_ACT_CFG, YOLOV7_NORM_CFG, YOLOV7_TINY_ACT_CFG,
                      DownC, EELANBlock, ELANBlock, MPConvBlock,
                      OfficialConvInitMixin, RepConv, SPPCSPCBlock,
                      reset_conv_parameters)


@MODELS.register_module()
class SPPCSPCNeck(OfficialConvInitMixin, BaseModule):
    """Neck of the official YOLOv7 models, layer for layer.

    From the top backbone level: :class:`SPPCSPCBlock`; then top-down, per
    lower level: a 1x1 ``reduce_conv`` of the level above, upsampled, and a
    1x1 ``lateral_conv`` of the backbone level, concatenated as [lateral,
    upsampled] into an ELAN(-H); then bottom-up, per upper level: a
    ``downsample`` of the level below concatenated as [downsampled,
    top-down feature] into an ELAN(-H); finally one 3x3 output conv per level
    (RepConv for yolov7 L). P6 models also have auxiliary output convs fed
    by the top-down features (and the SPPCSPC output) for the auxiliary
    head; they run only in training mode and are removed by
    :func:`mmyolo_ext.deploy.reparameterize`.

    ``arch_settings[arch]``:

    - ``sppcspc``: ``(out_channels, compact)``.
    - ``top_down``: from the top, per lower level ``(channels, mid, chain,
      out)``: reduce/lateral conv channels and the ELAN widths.
    - ``bottom_up``: from the bottom, per upper level ``(downsample,
      down_channels, mid, chain, out)``; ``downsample`` is ``'conv'``
      (3x3 stride 2), ``'mp'`` (:class:`MPConvBlock`) or ``'downc'``.
    - ``num_convs`` / ``concat_stride`` / ``num_elans``: the ELAN shape.
    - ``out_conv``: ``'conv'`` or ``'repconv'``; ``out_channels`` per level;
      ``aux_channels``: per level, or None without an auxiliary head.

    Args:
        arch (str): One of 'tiny', 'l', 'x', 'w6', 'e6', 'd6', 'e6e'.
        in_channels (Sequence[int], optional): Backbone output channels,
            lowest level first, checked against the arch.
        with_aux (bool): Build the auxiliary output convs (P6 archs only).
            Defaults to True.
        norm_cfg (dict): Normalization config.
        act_cfg (dict, optional): Activation config; defaults to the
            official one (LeakyReLU(0.1) for 'tiny', SiLU otherwise).
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    arch_settings = {
        'tiny': dict(
            in_channels=[128, 256, 512], sppcspc=(256, True),
            top_down=[(128, 64, 64, 128), (64, 32, 32, 64)],
            bottom_up=[('conv', 128, 64, 64, 128),
                       ('conv', 256, 128, 128, 256)],
            num_convs=2, concat_stride=1, num_elans=1,
            out_conv='conv', out_channels=[128, 256, 512],
            aux_channels=None),
        'l': dict(
            in_channels=[512, 1024, 1024], sppcspc=(512, False),
            top_down=[(256, 256, 128, 256), (128, 128, 64, 128)],
            bottom_up=[('mp', 256, 256, 128, 256),
                       ('mp', 512, 512, 256, 512)],
            num_convs=4, concat_stride=1, num_elans=1,
            out_conv='repconv', out_channels=[256, 512, 1024],
            aux_channels=None),
        'x': dict(
            in_channels=[640, 1280, 1280], sppcspc=(640, False),
            top_down=[(320, 256, 256, 320), (160, 128, 128, 160)],
            bottom_up=[('mp', 320, 256, 256, 320),
                       ('mp', 640, 512, 512, 640)],
            num_convs=6, concat_stride=2, num_elans=1,
            out_conv='conv', out_channels=[320, 640, 1280],
            aux_channels=None),
        'w6': dict(
            in_channels=[256, 512, 768, 1024], sppcspc=(512, False),
            top_down=[(384, 384, 192, 384), (256, 256, 128, 256),
                      (128, 128, 64, 128)],
            bottom_up=[('conv', 256, 256, 128, 256),
                       ('conv', 384, 384, 192, 384),
                       ('conv', 512, 512, 256, 512)],
            num_convs=4, concat_stride=1, num_elans=1,
            out_conv='conv', out_channels=[256, 512, 768, 1024],
            aux_channels=[320, 640, 960, 1280]),
        'e6': dict(
            in_channels=[320, 640, 960, 1280], sppcspc=(640, False),
            top_down=[(480, 384, 192, 480), (320, 256, 128, 320),
                      (160, 128, 64, 160)],
            bottom_up=[('downc', 320, 256, 128, 320),
                       ('downc', 480, 384, 192, 480),
                       ('downc', 640, 512, 256, 640)],
            num_convs=6, concat_stride=1, num_elans=1,
            out_conv='conv', out_channels=[320, 640, 960, 1280],
            aux_channels=[320, 640, 960, 1280]),
        'd6': dict(
            in_channels=[384, 768, 1152, 1536], sppcspc=(768, False),
            top_down=[(576, 384, 192, 576), (384, 256, 128, 384),
                      (192, 128, 64, 192)],
            bottom_up=[('downc', 384, 256, 128, 384),
                       ('downc', 576, 384, 192, 576),
                       ('downc', 768, 512, 256, 768)],
            num_convs=8, concat_stride=1, num_elans=1,
            out_conv='conv', out_channels=[384, 768, 1152, 1536],
            aux_channels=[384, 768, 1152, 1536]),
        'e6e': dict(
            in_channels=[320, 640, 960, 1280], sppcspc=(640, False),
            top_down=[(480, 384, 192, 480), (320, 256, 128, 320),
                      (160, 128, 64, 160)],
            bottom_up=[('downc', 320, 256, 128, 320),
                       ('downc', 480, 384, 192, 480),
                       ('downc', 640, 512, 256, 640)],
            num_convs=6, concat_stride=1, num_elans=2,
            out_conv='conv', out_channels=[320, 640, 960, 1280],
            aux_channels=[320, 640, 960, 1280]),
    }

    def __init__(self,
                 arch: str = 'l',
                 in_channels: Optional[Sequence[int]] = None,
                 with_aux: bool = True,
                 norm_cfg: ConfigType = YOLOV7_NORM_CFG,
                 act_cfg: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if arch not in self.arch_settings:
            raise KeyError(f'SPPCSPCNeck: unknown arch {arch!r}, expected '
                           f'one of {sorted(self.arch_settings)}')
        self.arch = arch
        setting = self.arch_settings[arch]
        if in_channels is not None and list(in_channels) != setting[
                'in_channels']:
            raise ValueError(f'SPPCSPCNeck({arch!r}) takes backbone outputs '
                             f'with {setting["in_channels"]} channels, got '
                             f'in_channels={list(in_channels)}')
        self.in_channels = list(setting['in_channels'])
        self.num_levels = len(self.in_channels)
        if act_cfg is None:
            act_cfg = YOLOV7_TINY_ACT_CFG if arch == 'tiny' else YOLOV7_ACT_CFG
        conv_kwargs = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)
        elan_shape = dict(
            num_convs=setting['num_convs'],
            concat_stride=setting['concat_stride'],
            **conv_kwargs)

        def build_elan(in_ch, mid, chain, out):
            if setting['num_elans'] > 1:
                return EELANBlock(setting['num_elans'], in_channels=in_ch,
                                  mid_channels=mid, chain_channels=chain,
                                  out_channels=out, **elan_shape)
            return ELANBlock(in_ch, mid, chain, out, **elan_shape)

        # Sub-modules are registered in the order of the official layers,
        # which the weight converter relies on.
        spp_channels, compact = setting['sppcspc']
        self.sppcspc = SPPCSPCBlock(
            self.in_channels[-1], spp_channels, compact=compact,
            **conv_kwargs)
        self.upsample = nn.Upsample(scale_factor=2, mode='nearest')

        # top-down, from the top: features[i] has top_down_channels[i]
        top_down_channels = [spp_channels]
        self.top_down_layers = nn.ModuleList()
        for i, (channels, mid, chain, out) in enumerate(setting['top_down']):
            lateral_level = self.num_levels - 2 - i
            self.top_down_layers.append(
                nn.ModuleDict(
                    dict(
                        reduce_conv=ConvModule(top_down_channels[-1],
                                               channels, 1, **conv_kwargs),
                        lateral_conv=ConvModule(
                            self.in_channels[lateral_level], channels, 1,
                            **conv_kwargs),
                        elan=build_elan(2 * channels, mid, chain, out))))
            top_down_channels.append(out)

        # bottom-up, from the bottom level
        bottom_up_channels = [top_down_channels[-1]]
        self.bottom_up_layers = nn.ModuleList()
        for i, (kind, down, mid, chain, out) in enumerate(
                setting['bottom_up']):
            self.bottom_up_layers.append(
                nn.ModuleDict(
                    dict(
                        downsample=self._build_downsample(
                            kind, bottom_up_channels[-1], down, conv_kwargs),
                        elan=build_elan(down + top_down_channels[-2 - i],
                                        mid, chain, out))))
            bottom_up_channels.append(out)

        out_conv = setting['out_conv']
        self.out_channels = list(setting['out_channels'])
        self.out_convs = nn.ModuleList(
            RepConv(in_ch, out_ch, **conv_kwargs) if out_conv == 'repconv'
            else ConvModule(in_ch, out_ch, 3, padding=1, **conv_kwargs)
            for in_ch, out_ch in zip(bottom_up_channels, self.out_channels))

        self.aux_channels: Optional[List[int]] = None
        self.aux_convs: Optional[nn.ModuleList] = None
        if with_aux and setting['aux_channels'] is not None:
            self.aux_channels = list(setting['aux_channels'])
            # taps, lowest level first: top-down outputs, then SPPCSPC
            tap_channels = top_down_channels[::-1]
            self.aux_convs = nn.ModuleList(
                ConvModule(in_ch, out_ch, 3, padding=1, **conv_kwargs)
                for in_ch, out_ch in zip(tap_channels, self.aux_channels))
            # tells the weight converter these layers feed the aux head only
            self.aux_convs.official_aux_only = True
        # the official init: PyTorch's default convs (OfficialConvInitMixin)
        reset_conv_parameters(self)

    @staticmethod
    def _build_downsample(kind: str, in_channels: int, out_channels: int,
                          conv_kwargs: dict) -> nn.Module:
        if kind == 'conv':
            return ConvModule(
                in_channels, out_channels, 3, stride=2, padding=1,
                **conv_kwargs)
        if kind == 'mp':
            return MPConvBlock(in_channels, out_channels, **conv_kwargs)
        if kind == 'downc':
            return DownC(in_channels, out_channels, **conv_kwargs)
        raise ValueError(f'SPPCSPCNeck: unknown downsample {kind!r}')

    @property
    def with_aux(self) -> bool:
        """Whether the auxiliary-head convs exist."""
        return self.aux_convs is not None

    def remove_aux(self) -> None:
        """Drop the auxiliary-head convs (not used for inference)."""
        self.aux_convs = None
        self.aux_channels = None

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Fuse the backbone levels.

        Args:
            inputs (Sequence[Tensor]): Backbone outputs, lowest level first.

        Returns:
            tuple[Tensor]: One map per level, lowest first; in training mode
            with auxiliary convs, followed by the auxiliary maps.
        """
        if len(inputs) != self.num_levels:
            raise ValueError(f'SPPCSPCNeck({self.arch!r}) takes '
                             f'{self.num_levels} backbone levels, got '
                             f'{len(inputs)}')
        top = self.sppcspc(inputs[-1])
        top_down_feats = [top]
        aux_taps = [top]
        for i, layer in enumerate(self.top_down_layers):
            lateral = layer['lateral_conv'](inputs[self.num_levels - 2 - i])
            upsampled = self.upsample(layer['reduce_conv'](top_down_feats[-1]))
            feat, tap = layer['elan'].forward_with_aux_tap(
                torch.cat([lateral, upsampled], dim=1))
            top_down_feats.append(feat)
            aux_taps.append(tap)

        bottom_up_feats = [top_down_feats[-1]]
        for i, layer in enumerate(self.bottom_up_layers):
            down = layer['downsample'](bottom_up_feats[-1])
            bottom_up_feats.append(layer['elan'](
                torch.cat([down, top_down_feats[-2 - i]], dim=1)))

        outs = [conv(x) for conv, x in zip(self.out_convs, bottom_up_feats)]
        if self.training and self.aux_convs is not None:
            outs += [
                conv(x) for conv, x in zip(self.aux_convs, aux_taps[::-1])
            ]
        return tuple(outs)
