# yolov7-e6: the official model, layer for layer; yolov7-w6 with the
# E6 backbone and neck (lead and auxiliary head, P3-P6 at 1280).
_base_ = ['./yolov7_w6.py']

model = dict(
    backbone=dict(arch='e6'),
    neck=dict(arch='e6'),
    bbox_head=dict(
        head_module=dict(
            in_channels=[320, 640, 960, 1280],
            aux_in_channels=[320, 640, 960, 1280])))
