# The embedded demo: yolov7-tiny learns to detect synthetic shapes on a CPU.
#
#   python tools/train.py configs/yolov7_tiny_demo.py
#
# The first run writes data/shapes/ (480 train + 120 val images, 320x320, of
# filled circles, rectangles and triangles, 12-120 px, random colours,
# overlapping, on textured noisy backgrounds; see
# mmyolo_ext/demo_data/synthetic_shapes.py), then trains from scratch, logs
# the loss with an ETA, evaluates COCO bbox mAP every few epochs and draws
# <work_dir>/curves.png (loss and mAP curves; numbers in curves.json).
#
# Measured on this project's 2-core CPU (torch's default 2 threads, quiet,
# fresh run, 2026-12-05; AVX2 without bfloat16, so float32 + channels_last:
# 0.40 s an iteration): bbox mAP_50 0.17 / 0.20 / 0.39 / 0.58 / 0.67 / 0.75 /
# 0.77 (mAP 0.06 / 0.08 / 0.17 / 0.30 / 0.40 / 0.48 / 0.49) after epochs
# 2 / 4 / 6 / 7 / 8 / 10 / 12, at 2.1 / 4.1 / 6.1 / 7.0 / 7.9 / 9.8 / 11.7 min
# of wall time. On a CPU with AVX512-BF16 (bfloat16 autocast, 0.17 s an
# iteration) an earlier run gave mAP_50 0.52 after epoch 7 (3.0 min) and
# 0.76 after 12 (5.5 min).
#
# Model: the official yolov7-tiny, 3 classes. Recipe: the official tiny
# recipe (yolov7_tiny_coco.py) adapted to 480 images and a 15-minute budget
# on two CPU cores; each difference and its reason:
#
# * assignment: the official non-OTA loss (hyp loss_ota: 0, "use 0 for
#   faster training": ComputeLossOTA with the YOLOv5 assigner, every
#   anchor-ratio candidate cell a positive). Early in training OTA's
#   dynamic k keeps few, poorly placed positives; measured here, mAP_50
#   after 3 epochs is 0.19 without OTA and 0.02 with it.
# * optimizer: Adam (lr 0.001, betas (0.937, 0.999)), the official train.py's
#   --adam option, instead of SGD 0.01: measured here, SGD learns the
#   classes far more slowly (mAP_50 0.001 vs 0.007 after 4 epochs, same
#   data and recipe otherwise).
# * batch 4, one optimizer step per batch (nominal batch = batch: no
#   accumulation to 64; the hyp file's weight decay unscaled): in ~1400
#   iterations every step counts, and accumulating to 64 would leave ~90.
# * input 320 (the images' own size) instead of 640; anchors unchanged.
# * loss gains of hyp.scratch.tiny used as given (scale_gains=False): the
#   official rules scale them for COCO at 640 and would shrink the class
#   gain to 0.5 * 3/80 = 0.019 and the objectness gain to 1.0 * (320/640)^2
#   = 0.25, slowing what a short run must learn first.
# * augmentation: the recipe's pipeline with mosaic, mixup, paste_in, HSV,
#   translate and scale at 0: each image letterboxed (at its own size, the
#   image itself), the official random_perspective's floor (s ~ U(1, 1.1):
#   a zoom of up to 10 % about the centre) and the left-right flip. Mosaic,
#   mixup, random affine and HSV regularize a 300-epoch COCO run; in a short
#   run on data drawn from the validation distribution they only slow the
#   fit (MMYOLO's full yolov7-tiny COCO recipe, run on 512 such shape images
#   on this CPU, reached mAP_50 0.019 after 9 epochs).
# * warm-up: 1 epoch (not max(3 epochs, 1000 iterations), most of the run)
#   and no warm-up bias lr of 0.1 (too large a step for Adam: biases start
#   at the base lr like the other groups).
#   These are the hyp values below (hyp.scratch.tiny with the demo's
#   changes); the recipe's pipelines and loss settings are built from them.
# * schedule: the one-cycle cosine to lr * 0.01 over max_epochs; evaluation
#   after every epoch (120 val images take ~5 s here, so the curve shows
#   when mAP_50 first reaches 0.5).
# * EMA: the official ramp (2000 updates) is kept; over ~1400 updates the
#   evaluated weights follow the model closely.
# * speed: mixed precision where the hardware runs it (the official
#   train.py always autocasts on CUDA): float16 on CUDA, bfloat16 on a CPU
#   with AVX512-BF16 or AMX (the loss stays float32); float32 on other
#   CPUs, where bfloat16 is emulated and slower. NHWC (channels_last)
#   weights and batches. Together 2.3x faster a training step on this CPU
#   than float32 NCHW (benchmarks/train_step.py); the curve is that of the
#   float32 run within run-to-run noise (README).
#   --cfg-options amp=False channels_last=False restores float32 NCHW.
_base_ = ['./_base_/models/yolov7_tiny.py', './_base_/yolov7_recipe_tiny.py']

from mmyolo_ext.datasets.transforms.recipe_pipelines import (  # noqa: E402
    letterbox_test_pipeline, yolov7_train_pipeline)
from mmyolo_ext.engine.optimizers import autocast_is_native  # noqa: E402

data_root = 'data/shapes/'
num_classes = 3
img_scale = (320, 320)  # the images' own size
max_epochs = 12
val_interval = 1
train_batch_size_per_gpu = 4
train_num_workers = 1  # two cores: one for the model; loading is light
val_batch_size_per_gpu = 8
amp = None  # None: where native (see the header); True / False: forced
channels_last = True

# hyp.scratch.tiny with the demo's changes (see the header): Adam at 0.001
# with a 1-epoch warm-up from the base lr, the non-OTA loss, no mosaic,
# mixup, paste_in, HSV, translation or scale range (the official
# random_perspective still zooms by U(1, 1.1)), the left-right flip
hyp = dict(
    _base_.hyp,
    lr0=0.001,
    warmup_epochs=1,
    warmup_bias_lr=0.001,
    loss_ota=0,
    mosaic=0.0,
    mixup=0.0,
    paste_in=0.0,
    translate=0.0,
    scale=0.0,
    hsv_h=0.0,
    hsv_s=0.0,
    hsv_v=0.0)

train_pipeline = yolov7_train_pipeline(hyp, img_scale)
train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    num_workers=train_num_workers,
    dataset=dict(
        type='SyntheticShapesDataset',
        data_root=data_root,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=False, min_size=0),
        pipeline=train_pipeline))

test_pipeline = letterbox_test_pipeline(img_scale)
val_dataloader = dict(
    batch_size=val_batch_size_per_gpu,
    num_workers=1,
    dataset=dict(
        type='SyntheticShapesDataset',
        data_root=data_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline,
        batch_shapes_cfg=dict(
            type='BatchShapePolicy',
            batch_size=val_batch_size_per_gpu,
            img_size=img_scale[0],
            size_divisor=_base_.size_divisor,
            extra_pad_ratio=0.5)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

model = dict(
    channels_last=channels_last,
    bbox_head=dict(
        head_module=dict(num_classes=num_classes),
        loss=dict(
            box_gain=hyp['box'],
            obj_gain=hyp['obj'],
            cls_gain=hyp['cls'],
            scale_gains=False,  # the hyp's gains as given (see the header)
            nominal_img_size=img_scale[0])),
    train_cfg=dict(
        assigner=dict(type='SimOTAAssigner' if hyp['loss_ota'] else
                      'YOLOv5Assigner')))

optim_wrapper = dict(
    type=('AmpSummedAccumulationOptimWrapper' if
          (autocast_is_native() if amp is None else amp) else
          'SummedAccumulationOptimWrapper'),
    optimizer=dict(
        _delete_=True,
        type='Adam',
        lr=hyp['lr0'],
        betas=(hyp['momentum'], 0.999),
        weight_decay=hyp['weight_decay'],
        batch_size_per_gpu=train_batch_size_per_gpu),
    paramwise_cfg=dict(base_total_batch_size=train_batch_size_per_gpu))
default_hooks = dict(
    param_scheduler=dict(
        lr_factor=hyp['lrf'],
        max_epochs=max_epochs,
        warmup_epochs=hyp['warmup_epochs'],
        warmup_mim_iter=0,
        warmup_bias_lr=hyp['warmup_bias_lr']),
    logger=dict(interval=20),
    checkpoint=dict(interval=val_interval, max_keep_ckpts=1))
train_cfg = dict(
    max_epochs=max_epochs, val_interval=val_interval, dynamic_intervals=None)
