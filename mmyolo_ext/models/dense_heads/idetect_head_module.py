"""Convolutions of the YOLOv7 detection head (IDetect / IAuxDetect)."""
import math
import re
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmdet.utils import OptMultiConfig
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmyolo.models.layers import ImplicitA, ImplicitM
from torch import Tensor

from mmyolo_ext.registry import MODELS
from .class_count_adaptation import (NUM_CLASS_FREE_CHANNELS,
                                     adapt_class_channels)

# our tensors with 5 + num_classes channels per anchor
_PER_ANCHOR_KEY = re.compile(
    r'^(?:(?:lead_convs|aux_convs)\.\d+\.(?:weight|bias)|'
    r'implicit_m\.\d+\.implicit)$')


@MODELS.register_module()
class IDetectHeadModule(BaseModule):
    """Per-level prediction convs of YOLOv7, with an optional aux head.

    Lead head, per level: ImplicitA -> 1x1 conv to ``num_base_priors * (5 +
    num_classes)`` channels -> ImplicitM. The output channels are in the
    official order, per prior ``[tx, ty, tw, th, obj, cls...]``, so official
    weights map one to one. The auxiliary head (P6 training) is one plain 1x1
    conv per level on the auxiliary features; its parameters are independent
    of the lead head's.

    A checkpoint trained for another number of classes (e.g. a converted
    official 80-class one, through ``load_from``) loads as well: in the
    prediction convs and ImplicitM, the box and objectness channels of every
    anchor are loaded and the class channels keep this module's
    initialization (with the official class-bias prior); the adapted tensors
    are logged. See :func:`adapt_class_channels`.

    Args:
        num_classes (int): Number of classes.
        in_channels (Sequence[int]): Lead input channels per level.
        aux_in_channels (Sequence[int], optional): Auxiliary input channels
            per level; None builds no auxiliary head.
        num_base_priors (int): Anchors per cell. Defaults to 3.
        featmap_strides (Sequence[int]): Stride of each level.
            Defaults to (8, 16, 32).
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    # official sub-module name -> ours (None: not a parameter of ours; the
    # converter checks the anchors against the config instead)
    official_key_map: Dict[str, Optional[str]] = {
        'm': 'lead_convs',
        'm2': 'aux_convs',
        'ia': 'implicit_a',
        'im': 'implicit_m',
        'anchors': None,
        'anchor_grid': None,
    }

    def __init__(self,
                 num_classes: int,
                 in_channels: Sequence[int],
                 aux_in_channels: Optional[Sequence[int]] = None,
                 num_base_priors: int = 3,
                 featmap_strides: Sequence[int] = (8, 16, 32),
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        if len(in_channels) != len(featmap_strides):
            raise ValueError(f'{len(in_channels)} in_channels for '
                             f'{len(featmap_strides)} featmap_strides')
        if aux_in_channels is not None and len(aux_in_channels) != len(
                in_channels):
            raise ValueError(f'{len(aux_in_channels)} aux_in_channels for '
                             f'{len(in_channels)} levels')
        self.num_classes = num_classes
        self.num_out_attrib = 5 + num_classes
        self.num_base_priors = num_base_priors
        self.featmap_strides = list(featmap_strides)
        self.num_levels = len(featmap_strides)
        self.in_channels = list(in_channels)
        out_channels = num_base_priors * self.num_out_attrib
        self.lead_convs = nn.ModuleList(
            nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.implicit_a: Optional[nn.ModuleList] = nn.ModuleList(
            ImplicitA(c) for c in in_channels)
        self.implicit_m: Optional[nn.ModuleList] = nn.ModuleList(
            ImplicitM(out_channels) for _ in in_channels)
        self.aux_convs: Optional[nn.ModuleList] = None
        if aux_in_channels is not None:
            self.aux_convs = nn.ModuleList(
                nn.Conv2d(c, out_channels, 1) for c in aux_in_channels)

    @property
    def with_aux(self) -> bool:
        """Whether the auxiliary head exists."""
        return self.aux_convs is not None

    def init_weights(self) -> None:
        """Official bias priors, on lead and auxiliary convs independently:
        objectness for about 8 objects per 640x640 image, classes for a
        prior probability of 0.6 / num_classes."""
        already_initialized = self.is_init
        super().init_weights()
        if already_initialized:  # the priors are added once
            return
        obj_priors = [math.log(8 / (640 / s)**2) for s in self.featmap_strides]
        cls_prior = self.class_bias_prior
        conv_lists = [self.lead_convs]
        if self.aux_convs is not None:
            conv_lists.append(self.aux_convs)
        with torch.no_grad():
            for convs in conv_lists:
                for conv, obj_prior in zip(convs, obj_priors):
                    bias = conv.bias.view(self.num_base_priors, -1)
                    bias[:, 4] += obj_prior
                    bias[:, 5:] += cls_prior

    @property
    def class_bias_prior(self) -> float:
        """The official class-bias prior: a probability of 0.6 / nc."""
        return math.log(0.6 / (self.num_classes - 0.99))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args,
                              **kwargs) -> None:
        self._adapt_class_count(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _adapt_class_count(self, state_dict: dict, prefix: str) -> None:
        """Replace, in ``state_dict``, prediction tensors made for another
        number of classes by ours with their box and objectness channels
        (mmengine's ``load_checkpoint`` and ``load_state_dict`` both pass
        here before loading the children)."""
        adapted, source_classes = [], set()
        for key, ours in self.state_dict(keep_vars=True).items():
            source = state_dict.get(prefix + key)
            if (source is None or source.shape == ours.shape or ours.is_meta
                    or not _PER_ANCHOR_KEY.match(key)):
                continue
            channel_dim = 1 if key.endswith('implicit') else 0
            new = adapt_class_channels(source, ours, self.num_base_priors,
                                       channel_dim)
            if new is None:  # not this layout: the usual size error
                continue
            if key.endswith('bias') and not self.is_init:
                # not initialized yet: the class prior init_weights would add
                new.view(self.num_base_priors,
                         -1)[:, NUM_CLASS_FREE_CHANNELS:] += \
                    self.class_bias_prior
            state_dict[prefix + key] = new
            adapted.append(f'{prefix}{key} {tuple(source.shape)} -> '
                           f'{tuple(new.shape)}')
            source_classes.add(
                source.shape[channel_dim] // self.num_base_priors -
                NUM_CLASS_FREE_CHANNELS)
        if adapted:
            print_log(
                f'loading prediction layers made for {sorted(source_classes)}'
                f' classes into {self.num_classes}: box and objectness '
                'channels of every anchor loaded, class channels '
                're-initialized, in ' + ', '.join(adapted), 'current')

    def forward(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Raw prediction maps.

        Args:
            feats (Sequence[Tensor]): ``num_levels`` lead features, optionally
                followed by ``num_levels`` auxiliary features.

        Returns:
            list[Tensor]: Per level ``(bs, num_base_priors * (5 +
            num_classes), ny, nx)`` maps, lead levels first.
        """
        n = self.num_levels
        if len(feats) not in (n, 2 * n) or (len(feats) == 2 * n
                                            and self.aux_convs is None):
            expected = f'{n} or {2 * n}' if self.with_aux else f'{n}'
            raise ValueError(f'IDetectHeadModule takes {expected} feature '
                             f'maps, got {len(feats)}')
        outs = []
        for i in range(n):
            x = feats[i]
            if self.implicit_a is not None:
                x = self.implicit_a[i](x)
            x = self.lead_convs[i](x)
            if self.implicit_m is not None:
                x = self.implicit_m[i](x)
            outs.append(x)
        if len(feats) == 2 * n:
            outs += [conv(x) for conv, x in zip(self.aux_convs, feats[n:])]
        return outs

    @torch.no_grad()
    def fuse_implicit(self) -> None:
        """Fold ImplicitA/ImplicitM into the lead convs and remove them.

        ``conv(x + a) * m == (m W) x + m (b + W a)``.
        """
        if self.implicit_a is None:
            return
        for conv, ia, im in zip(self.lead_convs, self.implicit_a,
                                self.implicit_m):
            weight = conv.weight
            shift = ia.implicit.reshape(1, -1, 1, 1)
            bias = conv.bias + (weight * shift).sum(dim=(1, 2, 3))
            scale = im.implicit.reshape(-1)
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias.copy_(bias * scale)
        self.implicit_a = None
        self.implicit_m = None

    def remove_aux(self) -> None:
        """Drop the auxiliary head (inference uses the lead head only)."""
        self.aux_convs = None
