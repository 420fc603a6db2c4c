# yolov7-tiny: the official model, layer for layer (IDetect head); yolov7 (L)
# with the tiny backbone and neck (LeakyReLU 0.1) and the tiny anchors (the
# gains of hyp.scratch.tiny are the tiny recipe's).
_base_ = ['./yolov7_l.py']

anchors = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)],
           [(116, 90), (156, 198), (373, 326)]]  # per level (w, h) in pixels

model = dict(
    backbone=dict(arch='tiny'),
    neck=dict(arch='tiny'),
    bbox_head=dict(
        head_module=dict(in_channels=[128, 256, 512]),
        prior_generator=dict(base_sizes=anchors)))
