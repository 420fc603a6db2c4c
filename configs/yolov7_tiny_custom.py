# yolov7-tiny on your own data in the official YOLO layout: the recipe and
# the command line of yolov7_l_custom.py (read its header), with the tiny
# model of models/yolov7_tiny.py (tiny backbone and neck, tiny anchors).
# The loss gains stay those of hyp.scratch.custom (box 0.05, cls 0.3, obj
# 0.7), as the official train.py uses that hyp file for any model.
#
#   python tools/train.py configs/yolov7_tiny_custom.py --cfg-options \
#       data_yaml=path/to/data.yaml max_epochs=100
_base_ = ['./yolov7_l_custom.py']

anchors = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)],
           [(116, 90), (156, 198), (373, 326)]]  # per level (w, h) in pixels

model = dict(
    backbone=dict(arch='tiny'),
    neck=dict(arch='tiny'),
    bbox_head=dict(
        head_module=dict(in_channels=[128, 256, 512]),
        prior_generator=dict(base_sizes=anchors)))
