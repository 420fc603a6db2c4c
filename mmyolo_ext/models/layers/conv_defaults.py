"""Normalization and activation settings shared by every YOLOv7 layer."""
# The official models build every BatchNorm with these values (their
# ``initialize_weights``); training dynamics and re-parameterization both
# depend on them.
YOLOV7_NORM_CFG = dict(type='BN', momentum=0.03, eps=0.001)
YOLOV7_ACT_CFG = dict(type='SiLU', inplace=True)
# yolov7-tiny uses LeakyReLU(0.1) everywhere instead of SiLU.
YOLOV7_TINY_ACT_CFG = dict(type='LeakyReLU', negative_slope=0.1, inplace=True)
