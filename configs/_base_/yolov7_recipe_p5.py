# The official YOLOv7 training recipe for the P5 models (yolov7, yolov7x):
# hyp.scratch.p5.yaml and train.py, on COCO under data/coco/, run by
# MMEngine with MMYOLO's and MMDetection's transforms.
#
# Inherit it next to a model file, e.g.
#   _base_ = ['./_base_/models/yolov7_l.py', './_base_/yolov7_recipe_p5.py']
# (sibling bases may not share a name: the model file owns img_scale,
# num_classes, anchors, the loss gains and test_cfg; this file names its
# input size input_size)
# A recipe variable changed in a child config does not reach the dicts built
# here from it: rebuild those dicts too (see yolov7_recipe_tiny.py).
#
# Differences from the official recipe, all for want of an equivalent
# transform: no paste_in (it needs segments); MMYOLO's random affine and
# mosaic transforms are used, with the hyp's translate and scale.
_base_ = ['./default_runtime.py']

# ---- hyp.scratch.p5 -------------------------------------------------------
lr0 = 0.01  # initial learning rate
lrf = 0.1  # final lr factor of the one-cycle cosine
momentum = 0.937
weight_decay = 0.0005  # at the nominal batch (scaled by the constructor)
warmup_epochs = 3
warmup_momentum = 0.8
warmup_bias_lr = 0.1
hsv_h, hsv_s, hsv_v = 0.015, 0.7, 0.4
translate = 0.2
scale = 0.9
fliplr = 0.5
mosaic_probs = [0.8, 0.2]  # 4-image, 9-image mosaic
mixup = 0.15
mixup_alpha = mixup_beta = 8.0  # mixup ratio ~ Beta(8, 8)

# ---- train.py ------------------------------------------------------------
nominal_batch_size = 64  # nbs: accumulate and weight decay refer to it
warmup_min_iters = 1000  # warm-up lasts max(3 epochs, 1000 iterations)
ema_momentum = 0.0001  # EMA decay 0.9999 * (1 - exp(-updates / 2000))
ema_ramp = 2000
max_epochs = 300
input_size = (640, 640)  # (width, height) of training and test inputs
train_batch_size_per_gpu = 16  # accumulation makes up the nominal 64
train_num_workers = 8
# official test.py --batch-size 32: rectangular batches of 32 images, each
# batch padded to one shape (batch_shapes_cfg below uses the same value)
val_batch_size_per_gpu = 32
val_num_workers = 2
persistent_workers = True

data_root = 'data/coco/'
dataset_type = 'YOLOv5CocoDataset'
train_ann_file = 'annotations/instances_train2017.json'
train_data_prefix = 'train2017/'
val_ann_file = 'annotations/instances_val2017.json'
val_data_prefix = 'val2017/'

# ---- data ----------------------------------------------------------------
# a missing or corrupt image is reported and another sample takes its place
# (mmyolo_ext.datasets.TolerantLoadImageFromFile; BadImageReportHook counts)
pre_transform = [
    dict(
        type='TolerantLoadImageFromFile',
        backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True)
]
# official random_perspective after the mosaic: no rotation, shear or
# perspective; scale ~ U(1 - scale, 1.1 + scale) (the official range),
# translate ~ U(.5 +- t) * size
random_affine = dict(
    type='YOLOv5RandomAffine',
    max_rotate_degree=0.0,
    max_shear_degree=0.0,
    max_translate_ratio=translate,
    scaling_ratio_range=(1 - scale, 1.1 + scale),
    border=(-input_size[0] // 2, -input_size[1] // 2),
    border_val=(114, 114, 114))
mosaic4_pipeline = [
    dict(
        type='Mosaic',
        img_scale=input_size,
        pad_val=114.0,
        pre_transform=pre_transform), random_affine
]
mosaic9_pipeline = [
    dict(
        type='Mosaic9',
        img_scale=input_size,
        pad_val=114.0,
        pre_transform=pre_transform), random_affine
]
mosaic_pipeline = dict(
    type='RandomChoice',
    transforms=[mosaic4_pipeline, mosaic9_pipeline],
    prob=mosaic_probs)
train_pipeline = [
    *pre_transform,
    mosaic_pipeline,
    dict(
        type='YOLOv5MixUp',
        alpha=mixup_alpha,
        beta=mixup_beta,
        prob=mixup,
        pre_transform=[*pre_transform, mosaic_pipeline]),
    dict(
        type='YOLOv5HSVRandomAug',
        hue_delta=hsv_h,
        saturation_delta=hsv_s,
        value_delta=hsv_v),
    dict(type='mmdet.RandomFlip', prob=fliplr),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'flip',
                   'flip_direction'))
]
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
        pipeline=train_pipeline))

# official test.py: letterbox to the long side, rectangular batch shapes
# padded by half a stride
test_pipeline = [
    # a bad image becomes a grey one: every validation image keeps its place
    dict(
        type='TolerantLoadImageFromFile',
        on_bad='blank',
        backend_args={{_base_.backend_args}}),
    dict(type='YOLOv5KeepRatioResize', scale=input_size),
    dict(
        type='LetterResize',
        scale=input_size,
        allow_scale_up=False,
        pad_val=dict(img=114)),
    dict(type='LoadAnnotations', with_bbox=True, _scope_='mmdet'),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor', 'pad_param'))
]
batch_shapes_cfg = dict(
    type='BatchShapePolicy',
    batch_size=val_batch_size_per_gpu,
    img_size=input_size[0],
    size_divisor=32,  # the largest stride
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

# ---- optimization --------------------------------------------------------
# SGD, Nesterov; groups: norm/implicit weights and biases without decay;
# accumulate max(round(64 / total batch), 1) iterations (gradients summed,
# as train.py does) and scale the weight decay by batch * accumulate / 64
optim_wrapper = dict(
    type='SummedAccumulationOptimWrapper',
    optimizer=dict(
        type='SGD',
        lr=lr0,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=True,
        batch_size_per_gpu=train_batch_size_per_gpu),
    constructor='NominalBatchOptimConstructor',
    paramwise_cfg=dict(base_total_batch_size=nominal_batch_size))
param_scheduler = None  # the hook below schedules lr, momentum, accumulate

default_hooks = dict(
    param_scheduler=dict(
        type='YOLOv7ParamSchedulerHook',
        scheduler_type='cosine',
        lr_factor=lrf,
        max_epochs=max_epochs,
        warmup_epochs=warmup_epochs,
        warmup_bias_lr=warmup_bias_lr,
        warmup_momentum=warmup_momentum,
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
