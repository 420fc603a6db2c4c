# yolov7-tiny: the official model, layer for layer
# (IDetect head).
# Self-contained: a training recipe inherits it with
# ``_base_ = ['../_base_/models/yolov7_tiny.py', ...]`` and may override the
# module-level variables below.
default_scope = 'mmyolo'
custom_imports = dict(imports=['mmyolo_ext'], allow_failed_imports=False)

num_classes = 80
img_scale = (640, 640)  # (width, height) of the nominal input
strides = [8, 16, 32]
anchors = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)],
           [(116, 90), (156, 198), (373, 326)]]  # per level (w, h) in pixels
# official hyp gains (scaled by the loss as the official train.py does)
loss_box_gain = 0.05
loss_obj_gain = 1.0
loss_cls_gain = 0.5

model = dict(
    type='YOLOv7Detector',
    data_preprocessor=dict(
        type='YOLOv5DetDataPreprocessor',
        mean=[0., 0., 0.],
        std=[255., 255., 255.],
        bgr_to_rgb=True),
    backbone=dict(type='ELANBackbone', arch='tiny'),
    neck=dict(type='SPPCSPCNeck', arch='tiny'),
    bbox_head=dict(
        type='IDetectHead',
        head_module=dict(
            type='IDetectHeadModule',
            num_classes=num_classes,
            in_channels=[128, 256, 512],
            featmap_strides=strides),
        prior_generator=dict(
            type='mmdet.YOLOAnchorGenerator',
            base_sizes=anchors,
            strides=strides),
        bbox_coder=dict(type='YOLOv5BBoxCoder'),
        loss=dict(
            type='ComputeLossOTA',
            box_gain=loss_box_gain,
            obj_gain=loss_obj_gain,
            cls_gain=loss_cls_gain,
            nominal_img_size=img_scale[0])),
    # the official evaluation settings
    test_cfg=dict(
        multi_label=True,
        nms_pre=30000,
        score_thr=0.001,
        nms=dict(type='nms', iou_threshold=0.65),
        max_per_img=300))
