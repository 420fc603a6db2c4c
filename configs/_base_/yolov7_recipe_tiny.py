# The official recipe for yolov7-tiny: hyp.scratch.tiny.yaml. It differs
# from P5 in the hyp values only (augmentation strength, mixup and paste_in
# probabilities, final lr factor, cls and obj gains).
_base_ = ['./yolov7_recipe_p5.py']

from mmyolo_ext.datasets.transforms.recipe_pipelines import \
    yolov7_train_pipeline  # noqa: E402

# ---- hyp.scratch.tiny (data/hyp.scratch.tiny.yaml, every key) ------------
hyp = dict(
    lr0=0.01, lrf=0.01, momentum=0.937, weight_decay=0.0005,
    warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1,
    box=0.05, cls=0.5, cls_pw=1.0, obj=1.0, obj_pw=1.0, iou_t=0.20,
    anchor_t=4.0, fl_gamma=0.0, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4,
    degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0,
    flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.05, copy_paste=0.0,
    paste_in=0.05, loss_ota=1)  # yapf: disable

# ---- what the P5 recipe derives from hyp, re-derived ----------------------
train_pipeline = yolov7_train_pipeline(hyp, _base_.img_scale)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(
    optimizer=dict(
        lr=hyp['lr0'],
        momentum=hyp['momentum'],
        weight_decay=hyp['weight_decay']))
default_hooks = dict(
    param_scheduler=dict(
        lr_factor=hyp['lrf'],
        warmup_epochs=hyp['warmup_epochs'],
        warmup_bias_lr=hyp['warmup_bias_lr'],
        warmup_momentum=hyp['warmup_momentum']))
recipe_model = dict(
    bbox_head=dict(
        loss=dict(
            box_gain=hyp['box'],
            cls_gain=hyp['cls'],
            obj_gain=hyp['obj'])),
    train_cfg=dict(
        assigner=dict(type='SimOTAAssigner' if hyp['loss_ota'] else
                      'YOLOv5Assigner')))
