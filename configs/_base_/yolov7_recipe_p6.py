# The official recipe for the P6 models (yolov7-w6/e6/d6/e6e, train_aux.py):
# hyp.scratch.p6.yaml at 1280. It differs from P5 in the input size, the
# final lr factor (lrf 0.2) and the letterbox stride (64); the auxiliary head
# and the AuxOTA loss are in the models/ files.
_base_ = ['./yolov7_recipe_p5.py']

from mmyolo_ext.datasets.transforms.recipe_pipelines import (  # noqa: E402
    letterbox_test_pipeline, yolov7_train_pipeline)

# ---- hyp.scratch.p6 (data/hyp.scratch.p6.yaml, every key, official names)
hyp = dict(
    lr0=0.01, lrf=0.2, momentum=0.937, weight_decay=0.0005,
    warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1,
    box=0.05, cls=0.3, cls_pw=1.0, obj=0.7, obj_pw=1.0, iou_t=0.20,
    anchor_t=4.0, fl_gamma=0.0, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4,
    degrees=0.0, translate=0.2, scale=0.9, shear=0.0, perspective=0.0,
    flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.15, copy_paste=0.0,
    paste_in=0.15, loss_ota=1)  # yapf: disable
img_scale = (1280, 1280)  # (width, height) of training and test inputs
size_divisor = 64  # the largest stride: letterbox batch shapes
train_batch_size_per_gpu = 8  # accumulation makes up the nominal 64

# ---- what the P5 recipe derives from hyp and img_scale, re-derived -------
train_pipeline = yolov7_train_pipeline(hyp, img_scale)
train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    dataset=dict(pipeline=train_pipeline))
test_pipeline = letterbox_test_pipeline(img_scale)
val_dataloader = dict(
    dataset=dict(
        pipeline=test_pipeline,
        batch_shapes_cfg=dict(
            img_size=img_scale[0], size_divisor=size_divisor)))
test_dataloader = val_dataloader
optim_wrapper = dict(
    optimizer=dict(
        lr=hyp['lr0'],
        momentum=hyp['momentum'],
        weight_decay=hyp['weight_decay'],
        batch_size_per_gpu=train_batch_size_per_gpu))
default_hooks = dict(
    param_scheduler=dict(
        lr_factor=hyp['lrf'],
        warmup_epochs=hyp['warmup_epochs'],
        warmup_bias_lr=hyp['warmup_bias_lr'],
        warmup_momentum=hyp['warmup_momentum']))
recipe_model = dict(
    bbox_head=dict(
        head_module=dict(num_classes=_base_.num_classes),
        loss=dict(
            box_gain=hyp['box'],
            cls_gain=hyp['cls'],
            obj_gain=hyp['obj'],
            nominal_img_size=img_scale[0])),
    train_cfg=dict(
        assigner=dict(type='SimOTAAssigner' if hyp['loss_ota'] else
                      'YOLOv5Assigner')))
