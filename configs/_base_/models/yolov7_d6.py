# yolov7-d6: the official model, layer for layer; yolov7-w6 with the
# D6 backbone and neck (lead and auxiliary head, P3-P6 at 1280).
_base_ = ['./yolov7_w6.py']

model = dict(
    backbone=dict(arch='d6'),
    neck=dict(arch='d6'),
    bbox_head=dict(
        head_module=dict(
            in_channels=[384, 768, 1152, 1536],
            aux_in_channels=[384, 768, 1152, 1536])))
