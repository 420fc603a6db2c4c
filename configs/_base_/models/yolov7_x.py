# yolov7x: the official model, layer for layer (IDetect head); yolov7 (L)
# with the X backbone and neck.
_base_ = ['./yolov7_l.py']

model = dict(
    backbone=dict(arch='x'),
    neck=dict(arch='x'),
    bbox_head=dict(head_module=dict(in_channels=[320, 640, 1280])))
