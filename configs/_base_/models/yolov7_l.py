# yolov7 (L): the official model, layer for layer (IDetect head); the base of
# the other model files, which override only what differs.
# Self-contained: a training recipe inherits it with
# ``_base_ = ['../_base_/models/yolov7_l.py', ...]``. A module-level variable
# below is read where this file builds ``model``: a file that changes one
# (anchors, say) also sets the model fields that use it.
default_scope = 'mmyolo'
custom_imports = dict(imports=['mmyolo_ext'], allow_failed_imports=False)

strides = [8, 16, 32]
anchors = [[(12, 16), (19, 36), (40, 28)], [(36, 75), (76, 55), (72, 146)],
           [(142, 110), (192, 243), (459, 401)]]  # per level (w, h) in pixels
model = dict(
    type='YOLOv7Detector',
    # YOLOv5DetDataPreprocessor that also applies the train pipeline's HSV
    # gains to the batch on the model's device (YOLOv7HSVAug(on_device=True))
    data_preprocessor=dict(
        type='YOLOv7DataPreprocessor',
        mean=[0., 0., 0.],
        std=[255., 255., 255.],
        bgr_to_rgb=True),
    backbone=dict(type='ELANBackbone', arch='l'),
    neck=dict(type='SPPCSPCNeck', arch='l'),
    bbox_head=dict(
        type='IDetectHead',
        head_module=dict(
            type='IDetectHeadModule',
            num_classes=80,  # the recipe's num_classes (recipe_model)
            in_channels=[256, 512, 1024],
            featmap_strides=strides),
        prior_generator=dict(
            type='mmdet.YOLOAnchorGenerator',
            base_sizes=anchors,
            strides=strides),
        bbox_coder=dict(type='YOLOv5BBoxCoder'),
        # the hyp's gains and input size come from the recipe (its
        # recipe_model); the loss's defaults are hyp.scratch.p5's at 640
        loss=dict(type='ComputeLossOTA')),
    # the assigners, which the detector hands to the head as its train_cfg
    # (the recipe picks the lead's from the hyp's loss_ota): the lead
    # head's and the auxiliary head's (used by the P6 models' aux head)
    train_cfg=dict(
        assigner=dict(type='SimOTAAssigner'),
        aux_assigner=dict(type='V7AuxAssigner')),
    # the official evaluation settings
    test_cfg=dict(
        multi_label=True,
        nms_pre=30000,
        score_thr=0.001,
        nms=dict(type='nms', iou_threshold=0.65),
        max_per_img=300))
