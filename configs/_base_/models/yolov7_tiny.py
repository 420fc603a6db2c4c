# yolov7-tiny: the official model, layer for layer (IDetect head); yolov7 (L)
# with the tiny backbone and neck (LeakyReLU 0.1), the tiny anchors and the
# gains of hyp.scratch.tiny.yaml.
_base_ = ['./yolov7_l.py']

anchors = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)],
           [(116, 90), (156, 198), (373, 326)]]  # per level (w, h) in pixels
loss_obj_gain = 1.0
loss_cls_gain = 0.5

model = dict(
    backbone=dict(arch='tiny'),
    neck=dict(arch='tiny'),
    bbox_head=dict(
        head_module=dict(in_channels=[128, 256, 512]),
        prior_generator=dict(base_sizes=anchors),
        loss=dict(obj_gain=loss_obj_gain, cls_gain=loss_cls_gain)))
