# yolov7-w6: the official model, layer for layer: four levels (P3-P6; the
# P6 recipes train it at 1280), the lead head (IDetect) plus the auxiliary
# head (IAuxDetect) used in training; the base of the other P6 model files.
_base_ = ['./yolov7_l.py']

strides = [8, 16, 32, 64]
anchors = [[(19, 27), (44, 40), (38, 94)], [(96, 68), (86, 152), (180, 137)],
           [(140, 301), (303, 264), (238, 542)],
           [(436, 615), (739, 380), (925, 792)]]  # per level (w, h) in pixels

model = dict(
    backbone=dict(arch='w6'),
    neck=dict(arch='w6'),
    bbox_head=dict(
        head_module=dict(
            in_channels=[256, 512, 768, 1024],
            aux_in_channels=[320, 640, 960, 1280],
            featmap_strides=strides),
        prior_generator=dict(base_sizes=anchors, strides=strides)))
