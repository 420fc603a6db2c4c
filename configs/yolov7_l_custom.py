# yolov7 (L) on your own data in the official YOLO layout (data.yaml +
# images/ + labels/*.txt). The only required edit is data_yaml (and, to
# fine-tune, load_from), or give them on the command line:
#
#   python tools/train.py configs/yolov7_l_custom.py --cfg-options \
#       data_yaml=path/to/data.yaml max_epochs=100 \
#       train_batch_size_per_gpu=8 'img_scale=(640, 640)' \
#       load_from=work_dirs/yolov7_training_mmyolo_ext.pth
#
# tools/train.py and tools/test.py substitute a plain --cfg-options name in
# the config files that define it before they are evaluated
# (mmyolo_ext/engine/config_variables.py), so the pipelines, batch shapes,
# schedule and optimizer below follow data_yaml, img_scale, max_epochs and
# train_batch_size_per_gpu. num_classes and the class names are read from
# the data.yaml: they size the head, scale the class loss gain (nc / 80) and
# name the classes of the metric.
#
# Recipe: the official hyp.scratch.custom.yaml, which is the P5 hyp
# (yolov7_recipe_p5.py) with scale 0.5, mixup 0 and paste_in 0 (not
# implemented here); with the official train.py around it (warm-up,
# one-cycle cosine, EMA), mosaic all epochs, autoanchor before training, and
# validation as the official test.py (rectangular letterbox batches of
# val_batch_size_per_gpu images). Adapted to small data, each change below
# with its measurement: Adam (the official --adam), OTA only when
# fine-tuning, accumulation to 16 images, a warm-up floor of 100 iterations.
_base_ = ['./_base_/models/yolov7_l.py', './_base_/yolov7_recipe_p5.py']

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

# ---- from the data.yaml ---------------------------------------------------
# (the datasets take the class names from it themselves)
data_names = tuple(read_data_yaml(data_yaml)['names'])
# as YOLODataset(single_cls=True) names its one class
class_names = ('item', ) if single_cls and len(data_names) > 1 else data_names
num_classes = len(class_names)

# ---- hyp.scratch.custom (differences from hyp.scratch.p5) -----------------
scale = 0.5
mixup = 0.0

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
#   from scratch: this recipe 0.451; with the official warm-up and nominal
#   batch 64 0.099; with OTA 0.040; the hyp's SGD + OTA 0.048; the demo
#   recipe 0.382; MMYOLO's yolov7-tiny COCO recipe 0.003
#   fine-tuned from a 3-class yolov7-tiny of other shapes data: this recipe
#   (OTA) 0.683 after 8 epochs, 0.630 after 40; without OTA 0.448 / 0.632;
#   SGD + OTA 0.343 / 0.648

# ---- everything below is derived from the values above -------------------
input_size = img_scale
pre_transform = _base_.pre_transform
random_affine = dict(
    type='YOLOv5RandomAffine',
    max_rotate_degree=0.0,
    max_shear_degree=0.0,
    max_translate_ratio=_base_.translate,
    # the official random_perspective: s ~ U(1 - scale, 1.1 + scale)
    scaling_ratio_range=(1 - scale, 1.1 + scale),
    border=(-img_scale[0] // 2, -img_scale[1] // 2),
    border_val=(114, 114, 114))
mosaic_pipeline = dict(
    type='RandomChoice',
    transforms=[[
        dict(
            type=mosaic_type,
            img_scale=img_scale,
            pad_val=114.0,
            pre_transform=pre_transform), random_affine
    ] for mosaic_type in ('Mosaic', 'Mosaic9')],
    prob=_base_.mosaic_probs)
train_pipeline = [
    *pre_transform,
    mosaic_pipeline,
    # mixup 0: no YOLOv5MixUp
    *_base_.train_pipeline[-3:],  # HSV, flip, pack: as the P5 recipe
]
train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    num_workers=train_num_workers,
    dataset=dict(
        _delete_=True,
        type='YOLODataset',
        data_yaml=data_yaml,
        split='train',
        single_cls=single_cls,
        pipeline=train_pipeline))

test_pipeline = [
    *_base_.test_pipeline[:1],
    dict(type='YOLOv5KeepRatioResize', scale=img_scale),
    dict(
        type='LetterResize',
        scale=img_scale,
        allow_scale_up=False,
        pad_val=dict(img=114)),
    dict(type='LoadAnnotations', with_bbox=True, _scope_='mmdet'),
    dict(
        type='mmdet.PackDetInputs',
        # 'instances': the metric's ground truths (no COCO json)
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor', 'pad_param', 'instances'))
]
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
            size_divisor=32,
            extra_pad_ratio=0.5)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=None)
test_evaluator = val_evaluator

model = dict(
    bbox_head=dict(
        head_module=dict(num_classes=num_classes),
        loss=dict(
            nominal_img_size=img_scale[0],
            assigner=dict(type='SimOTAAssigner' if (
                load_from is not None if ota is None else ota) else
                          'YOLOv5Assigner'))))

adam_lr = 0.001
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='Adam',
        lr=adam_lr,
        betas=(_base_.momentum, 0.999),
        weight_decay=_base_.weight_decay,
        batch_size_per_gpu=train_batch_size_per_gpu) if adam else dict(
            batch_size_per_gpu=train_batch_size_per_gpu),
    paramwise_cfg=dict(base_total_batch_size=nominal_batch_size))
default_hooks = dict(
    param_scheduler=dict(
        max_epochs=max_epochs,
        warmup_mim_iter=warmup_min_iters,
        warmup_bias_lr=adam_lr if adam else _base_.warmup_bias_lr),
    checkpoint=dict(save_best='coco/bbox_mAP'))
custom_hooks = [
    *_base_.custom_hooks,
    dict(type='AutoAnchorHook', img_size=img_scale, enabled=auto_anchor),
]
train_cfg = dict(
    max_epochs=max_epochs,
    dynamic_intervals=[(max(max_epochs - 30, 1), 1)])
