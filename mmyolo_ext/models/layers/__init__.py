from .conv_defaults import (YOLOV7_ACT_CFG, YOLOV7_NORM_CFG,
                            YOLOV7_TINY_ACT_CFG)
from .elan import EELANBlock, ELANBlock
from .official_init import OfficialConvInitMixin, reset_conv_parameters
from .rep_conv import RepConv, fold_batch_norm
from .sppcspc import SPPCSPCBlock
from .transitions import DownC, MPConvBlock, ReOrg

__all__ = [
    'YOLOV7_ACT_CFG', 'YOLOV7_NORM_CFG', 'YOLOV7_TINY_ACT_CFG', 'ELANBlock',
    'EELANBlock', 'RepConv', 'fold_batch_norm', 'SPPCSPCBlock', 'DownC',
    'MPConvBlock', 'ReOrg', 'OfficialConvInitMixin',
    'reset_conv_parameters'
]
