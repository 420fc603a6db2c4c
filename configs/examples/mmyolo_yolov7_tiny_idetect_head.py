# MMYOLO's own yolov7-tiny config, as installed, with its head replaced by
# mmyolo_ext's IDetectHead and the official OTA loss (ComputeLossOTA):
#
#   python tools/train.py configs/examples/mmyolo_yolov7_tiny_idetect_head.py
#
# Everything else (MMYOLO's backbone and neck, data pipeline, schedule) is
# MMYOLO's. custom_imports is all it takes to reach our modules.
_base_ = 'mmyolo::yolov7/yolov7_tiny_syncbn_fast_8x16b-300e_coco.py'
custom_imports = dict(imports=['mmyolo_ext'], allow_failed_imports=False)

num_classes = _base_.num_classes
strides = _base_.strides
anchors = _base_.anchors

# mmengine adds _scope_='mmyolo' to every dict of a 'mmyolo::' base, and a
# collate function is called with its dict's keys ("yolov5_collate() got an
# unexpected keyword argument '_scope_'"), so the collate dict is rebuilt
train_dataloader = dict(
    collate_fn=dict(_delete_=True, type='yolov5_collate'))

model = dict(
    bbox_head=dict(
        _delete_=True,
        type='IDetectHead',
        head_module=dict(
            type='IDetectHeadModule',
            num_classes=num_classes,
            in_channels=[128, 256, 512],  # MMYOLO's tiny neck outputs
            featmap_strides=strides),
        prior_generator=dict(
            type='mmdet.YOLOAnchorGenerator',
            base_sizes=anchors,
            strides=strides),
        bbox_coder=dict(type='YOLOv5BBoxCoder'),
        # hyp.scratch.tiny gains, scaled by the official rules
        loss=dict(
            type='ComputeLossOTA',
            box_gain=0.05,
            obj_gain=1.0,
            cls_gain=0.5,
            nominal_img_size=_base_.img_scale[0])),
    # the assigners (handed to the head as its train_cfg): the official OTA
    train_cfg=dict(assigner=dict(type='SimOTAAssigner')))
