# The official YOLOv7 training recipe for the P5 models (yolov7, yolov7x):
# hyp.scratch.p5.yaml and train.py, on COCO under data/coco/, run by
# MMEngine. The base of the other recipes (P6, tiny, custom), which change
# hyp (and img_scale) and re-derive what is built from them below.
#
# A recipe is a model file plus a recipe file; the config that joins them
# merges the recipe's recipe_model (classes, the hyp's loss settings) into
# the model (sibling bases may not share a name, so the recipe cannot write
# into the model file's ``model`` itself):
#   _base_ = ['./_base_/models/yolov7_l.py', './_base_/yolov7_recipe_p5.py']
#   model = _base_.recipe_model
#
# The train and test pipelines are built once for every recipe from hyp and
# img_scale (mmyolo_ext/datasets/transforms/recipe_pipelines.py): plain
# lists of transform dicts, printed with the config and swappable in it.
# A variable changed in a child config does not reach the dicts built here
# from it: tools/train.py --cfg-options hyp=... / img_scale=... substitutes
# it where it is defined (mmyolo_ext/engine/config_variables.py).
_base_ = ['./default_runtime.py']

from mmyolo_ext.datasets.transforms.recipe_pipelines import (  # noqa: E402
    letterbox_test_pipeline, yolov7_train_pipeline)

# ---- hyp.scratch.p5 (data/hyp.scratch.p5.yaml, every key, official names)
hyp = dict(
    lr0=0.01,  # initial learning rate
    lrf=0.1,  # final OneCycleLR learning rate (lr0 * lrf)
    momentum=0.937,
    weight_decay=0.0005,  # at the nominal batch (scaled by the constructor)
    warmup_epochs=3.0,
    warmup_momentum=0.8,
    warmup_bias_lr=0.1,
    box=0.05,  # loss gains (scaled by the loss as the official train.py)
    cls=0.3,
    cls_pw=1.0,
    obj=0.7,
    obj_pw=1.0,
    iou_t=0.20,
    anchor_t=4.0,
    fl_gamma=0.0,
    hsv_h=0.015,
    hsv_s=0.7,
    hsv_v=0.4,
    degrees=0.0,
    translate=0.2,
    scale=0.9,  # random_perspective's s ~ U(1 - scale, 1.1 + scale)
    shear=0.0,
    perspective=0.0,
    flipud=0.0,
    fliplr=0.5,
    mosaic=1.0,
    mixup=0.15,
    copy_paste=0.0,
    paste_in=0.15,
    loss_ota=1)

# ---- train.py ------------------------------------------------------------
nominal_batch_size = 64  # nbs: accumulate and weight decay refer to it
cache_images = None  # 'ram' / 'disk': the official --cache-images
warmup_min_iters = 1000  # warm-up lasts max(3 epochs, 1000 iterations)
ema_momentum = 0.0001  # EMA decay 0.9999 * (1 - exp(-updates / 2000))
ema_ramp = 2000
max_epochs = 300
img_scale = (640, 640)  # (width, height) of training and test inputs
size_divisor = 32  # the largest stride: letterbox batch shapes
train_batch_size_per_gpu = 16  # accumulation makes up the nominal 64
train_num_workers = 8
# official test.py --batch-size 32: rectangular batches of 32 images, each
# batch padded to one shape (batch_shapes_cfg below uses the same value)
val_batch_size_per_gpu = 32
val_num_workers = 2
persistent_workers = True

data_root = 'data/coco/'
dataset_type = 'YOLOv7CocoDataset'  # YOLOv5CocoDataset + cache_images
train_ann_file = 'annotations/instances_train2017.json'
train_data_prefix = 'train2017/'
val_ann_file = 'annotations/instances_val2017.json'
val_data_prefix = 'val2017/'

# ---- data ----------------------------------------------------------------
# the official LoadImagesAndLabels augmentation (a bad image is reported and
# another takes its place; BadImageReportHook counts)
train_pipeline = yolov7_train_pipeline(hyp, img_scale)
train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    num_workers=train_num_workers,
    persistent_workers=persistent_workers,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    # yolov5_collate keeping the image files (named by a skipped step)
    collate_fn=dict(type='yolov5_collate_with_files'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=train_ann_file,
        data_prefix=dict(img=train_data_prefix),
        filter_cfg=dict(filter_empty_gt=False, min_size=32),
        cache_images=cache_images,
        pipeline=train_pipeline))

# official test.py: letterbox to the long side, rectangular batch shapes
# padded by half a stride
test_pipeline = letterbox_test_pipeline(img_scale)
batch_shapes_cfg = dict(
    type='BatchShapePolicy',
    batch_size=val_batch_size_per_gpu,
    img_size=img_scale[0],
    size_divisor=size_divisor,
    extra_pad_ratio=0.5)
val_dataloader = dict(
    batch_size=val_batch_size_per_gpu,
    num_workers=val_num_workers,
    persistent_workers=persistent_workers,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        test_mode=True,
        data_prefix=dict(img=val_data_prefix),
        ann_file=val_ann_file,
        pipeline=test_pipeline,
        batch_shapes_cfg=batch_shapes_cfg))
test_dataloader = val_dataloader

# pycocotools' default maxDets (1, 10, 100), as the official test.py:
# mAP and mAP_50 both count up to 100 detections per image
val_evaluator = dict(
    type='mmdet.CocoMetric',
    proposal_nums=(1, 10, 100),
    ann_file=data_root + val_ann_file,
    metric='bbox')
test_evaluator = val_evaluator

# tools/test.py --tta: the official test.py --augment (input scales 1, 0.83,
# 0.67, the 0.83 pass flipped left-right, all boxes merged before one NMS).
# The passes are made from the letterboxed batch, as there, so the TTA
# pipeline is the test pipeline: tools/test.py uses the test dataloader's own
# pipeline when a config sets no tta_pipeline (one set here would not follow
# a child config's test_pipeline).
tta_model = dict(
    type='YOLOv7TTAModel', scales=(1, 0.83, 0.67), flips=(False, True, False))

# the official evaluation's conf 0.001, NMS IoU 0.65, multi-label and 300
# detections per image are the model's test_cfg (models/ files)

# what the recipe sets in the model: the classes and the hyp's loss settings
# (gains, scaled for nc, levels and input size as train.py scales them;
# loss_ota 1: OTA, 0: the YOLOv5 rule). The config that joins a model file
# and this recipe merges it: model = _base_.recipe_model
num_classes = 80
recipe_model = dict(
    bbox_head=dict(
        head_module=dict(num_classes=num_classes),
        loss=dict(
            box_gain=hyp['box'],
            cls_gain=hyp['cls'],
            obj_gain=hyp['obj'],
            nominal_img_size=img_scale[0])),
    train_cfg=dict(
        assigner=dict(type='SimOTAAssigner' if hyp['loss_ota'] else
                      'YOLOv5Assigner')))

# ---- optimization --------------------------------------------------------
# SGD, Nesterov; groups: norm/implicit weights and biases without decay;
# accumulate max(round(64 / total batch), 1) iterations (gradients summed,
# as train.py does) and scale the weight decay by batch * accumulate / 64
optim_wrapper = dict(
    type='SummedAccumulationOptimWrapper',
    optimizer=dict(
        type='SGD',
        lr=hyp['lr0'],
        momentum=hyp['momentum'],
        weight_decay=hyp['weight_decay'],
        nesterov=True,
        batch_size_per_gpu=train_batch_size_per_gpu),
    constructor='NominalBatchOptimConstructor',
    paramwise_cfg=dict(base_total_batch_size=nominal_batch_size))
param_scheduler = None  # the hook below schedules lr, momentum, accumulate

default_hooks = dict(
    param_scheduler=dict(
        type='YOLOv7ParamSchedulerHook',
        scheduler_type='cosine',
        lr_factor=hyp['lrf'],
        max_epochs=max_epochs,
        warmup_epochs=hyp['warmup_epochs'],
        warmup_bias_lr=hyp['warmup_bias_lr'],
        warmup_momentum=hyp['warmup_momentum'],
        warmup_mim_iter=warmup_min_iters),
    checkpoint=dict(
        type='CheckpointHook',
        interval=1,
        save_param_scheduler=False,
        save_best='auto',
        max_keep_ckpts=3))

# EMA weights are evaluated and saved (EMAHook swaps them in for validation
# and stores them in the checkpoint); updated once per optimizer step
custom_hooks = [
    dict(
        type='OptimStepEMAHook',
        ema_type='ExpMomentumEMA',
        momentum=ema_momentum,
        gamma=ema_ramp,
        update_buffers=True,
        strict_load=False,
        priority=49),
    dict(type='CurvePlotHook'),
    # names the images of a batch whose optimizer step is skipped
    dict(type='BatchFilesHook'),
    dict(type='BadImageReportHook')
]

train_cfg = dict(
    # continues mid-epoch on --resume (mmengine's loop redoes the epoch)
    type='ResumableEpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_interval=1,
    dynamic_intervals=[(max_epochs - 30, 1)])
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
