# The recipe for your own data in the official YOLO layout (data.yaml +
# images/ + labels/*.txt): the official hyp.scratch.custom.yaml with the
# official train.py around it (warm-up, one-cycle cosine, EMA), mosaic all
# epochs, autoanchor before training, and validation as the official test.py
# (rectangular letterbox batches of val_batch_size_per_gpu images). Adapted
# to small data, each change below with its measurement: Adam (the official
# --adam), OTA only when fine-tuning, accumulation to 16 images, a warm-up
# floor of 100 iterations. Joined with a model file by yolov7_l_custom.py,
# yolov7_tiny_custom.py (and, at 1280, yolov7_recipe_custom_p6.py).
#
# tools/train.py and tools/test.py substitute a plain --cfg-options name in
# the config files that define it before they are evaluated
# (mmyolo_ext/engine/config_variables.py), so the pipelines, batch shapes,
# schedule and optimizer below follow data_yaml, img_scale, max_epochs,
# train_batch_size_per_gpu and cache_images. num_classes and the class names
# are read from the data.yaml: they size the head, scale the class loss gain
# (nc / 80) and name the classes of the metric.
_base_ = ['./yolov7_recipe_p5.py']

from mmyolo_ext.datasets.transforms.recipe_pipelines import (  # noqa: E402
    letterbox_test_pipeline, yolov7_train_pipeline)
from mmyolo_ext.datasets.yolo_dataset import read_data_yaml  # noqa: E402

data_yaml = 'data/custom/data.yaml'
img_scale = (640, 640)  # (width, height) of training and test inputs
max_epochs = 300
train_batch_size_per_gpu = 16
val_batch_size_per_gpu = 32  # official test.py --batch 32
train_num_workers = 8
val_num_workers = 2
auto_anchor = True  # False: the official --noautoanchor
single_cls = False  # True: every label is class 0 (the official --single-cls)
load_from = None  # e.g. a converted official checkpoint, to fine-tune
cache_images = None  # 'ram' / 'disk': decoded images kept (--cache-images)

# ---- from the data.yaml ---------------------------------------------------
# (the datasets take the class names from it themselves)
data_names = tuple(read_data_yaml(data_yaml)['names'])
# as YOLODataset(single_cls=True) names its one class
class_names = ('item', ) if single_cls and len(data_names) > 1 else data_names
num_classes = len(class_names)

# ---- hyp.scratch.custom (data/hyp.scratch.custom.yaml, every key) ---------
hyp = dict(
    lr0=0.01, lrf=0.1, momentum=0.937, weight_decay=0.0005,
    warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1,
    box=0.05, cls=0.3, cls_pw=1.0, obj=0.7, obj_pw=1.0, iou_t=0.20,
    anchor_t=4.0, fl_gamma=0.0, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4,
    degrees=0.0, translate=0.2, scale=0.5, shear=0.0, perspective=0.0,
    flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.0, copy_paste=0.0,
    paste_in=0.0, loss_ota=1)  # yapf: disable

# ---- adapted to small data (measured: benchmarks/custom_recipe.py) ----
# warm-up of max(3 epochs, 100 iterations), YOLOv5's later floor: the
# official 1000 iterations are 70 epochs of a 58-image set at batch 4
warmup_min_iters = 100
# accumulate to 16 images, not 64: a 58-image set at 64 gets one optimizer
# step an epoch (weight decay is scaled to the same nominal batch)
nominal_batch_size = 16
# the official --adam: Adam with betas (momentum, 0.999) at lr0 0.001 (the
# YOLOv5 hyp files' Adam lr; 0.01 is SGD's), warm-up bias lr = lr0 (0.1 is
# too large a step for Adam). False: the hyp's SGD 0.01
adam = True
# the hyp's loss_ota. None: OTA when fine-tuning (load_from given), the
# non-OTA YOLOv5 assigner from scratch (the official hyp comment: "use 0
# for faster training"): from scratch on small data OTA's dynamic k keeps
# few, poorly placed positives for a long time; from trained weights its
# matches are good and it converges faster. True / False: forced.
ota = None
# Measured on the shifted shapes set (58 training images, a validation split
# drawn unlike them; benchmarks/custom_recipe.py, yolov7-tiny, 320,
# batch 4, 40 epochs = 600 iterations), bbox mAP_50 after 40 epochs:
#   from scratch: this recipe 0.451 (re-measured with the fused train
#   pipeline: 0.433, mAP 0.186; best 0.483 after 32 epochs); with the
#   official warm-up and nominal
#   batch 64 0.099; with OTA 0.040; the hyp's SGD + OTA 0.048; the demo
#   recipe 0.382; MMYOLO's yolov7-tiny COCO recipe 0.003
#   fine-tuned from a 3-class yolov7-tiny of other shapes data: this recipe
#   (OTA) 0.683 after 8 epochs, 0.630 after 40; without OTA 0.448 / 0.632;
#   SGD + OTA 0.343 / 0.648

# ---- everything below is derived from the values above -------------------
train_pipeline = yolov7_train_pipeline(hyp, img_scale)
train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    num_workers=train_num_workers,
    dataset=dict(
        _delete_=True,
        type='YOLODataset',
        data_yaml=data_yaml,
        split='train',
        single_cls=single_cls,
        cache_images=cache_images,
        pipeline=train_pipeline))

# 'instances': the metric's ground truths (no COCO json)
test_pipeline = letterbox_test_pipeline(
    img_scale,
    meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
               'scale_factor', 'pad_param', 'instances'))
val_dataloader = dict(
    batch_size=val_batch_size_per_gpu,
    num_workers=val_num_workers,
    dataset=dict(
        _delete_=True,
        type='YOLODataset',
        data_yaml=data_yaml,
        split='val',
        single_cls=single_cls,
        test_mode=True,
        pipeline=test_pipeline,
        batch_shapes_cfg=dict(
            type='BatchShapePolicy',
            batch_size=val_batch_size_per_gpu,
            img_size=img_scale[0],
            size_divisor=_base_.size_divisor,
            extra_pad_ratio=0.5)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=None)
test_evaluator = val_evaluator

recipe_model = dict(
    bbox_head=dict(
        head_module=dict(num_classes=num_classes),
        loss=dict(
            box_gain=hyp['box'],
            cls_gain=hyp['cls'],
            obj_gain=hyp['obj'],
            nominal_img_size=img_scale[0])),
    train_cfg=dict(
        assigner=dict(type='SimOTAAssigner' if (
            load_from is not None if ota is None else ota) else
                      'YOLOv5Assigner')))

adam_lr = 0.001
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='Adam',
        lr=adam_lr,
        betas=(hyp['momentum'], 0.999),
        weight_decay=hyp['weight_decay'],
        batch_size_per_gpu=train_batch_size_per_gpu) if adam else dict(
            lr=hyp['lr0'],
            momentum=hyp['momentum'],
            weight_decay=hyp['weight_decay'],
            batch_size_per_gpu=train_batch_size_per_gpu),
    paramwise_cfg=dict(base_total_batch_size=nominal_batch_size))
default_hooks = dict(
    param_scheduler=dict(
        lr_factor=hyp['lrf'],
        max_epochs=max_epochs,
        warmup_epochs=hyp['warmup_epochs'],
        warmup_momentum=hyp['warmup_momentum'],
        warmup_mim_iter=warmup_min_iters,
        warmup_bias_lr=adam_lr if adam else hyp['warmup_bias_lr']),
    checkpoint=dict(save_best='coco/bbox_mAP'))
custom_hooks = [
    *_base_.custom_hooks,
    dict(type='AutoAnchorHook', img_size=img_scale, enabled=auto_anchor),
]
train_cfg = dict(
    max_epochs=max_epochs,
    dynamic_intervals=[(max(max_epochs - 30, 1), 1)])
