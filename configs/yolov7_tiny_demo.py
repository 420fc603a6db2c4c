# The embedded demo: yolov7-tiny learns to detect synthetic shapes on a CPU.
#
#   python tools/train.py configs/yolov7_tiny_demo.py
#
# generates data/shapes/ once (480 train + 120 val 320x320 images of filled
# circles, rectangles and triangles, 12-120 px, on textured noisy
# backgrounds; mmyolo_ext/datasets/synthetic_shapes.py), trains from scratch
# and evaluates COCO bbox mAP; <work_dir>/curves.png shows the loss and mAP.
#
# The model is the official yolov7-tiny; the recipe is the official tiny
# recipe (yolov7_tiny_coco.py) adapted to a few hundred images and a short
# schedule on two CPU cores. What differs, and why:
_base_ = ['./_base_/models/yolov7_tiny.py', './_base_/yolov7_recipe_tiny.py']

data_root = 'data/shapes/'
num_classes = 3
input_size = (320, 320)  # the images' own size; COCO trains at 640
max_epochs = 16
train_batch_size_per_gpu = 8
train_num_workers = 1  # two cores: one for the model, data is light
val_batch_size_per_gpu = 8
val_interval = 4  # evaluation costs training time

pre_transform = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True)
]
train_pipeline = [
    *pre_transform,
    dict(
        type='YOLOv5RandomAffine',
        max_rotate_degree=0.0,
        max_shear_degree=0.0,
        max_translate_ratio=0.1,
        scaling_ratio_range=(0.75, 1.25),
        border=(0, 0),
        border_val=(114, 114, 114)),
    dict(type='YOLOv5HSVRandomAug'),
    dict(type='mmdet.RandomFlip', prob=0.5),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'flip',
                   'flip_direction'))
]
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

test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
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
            img_size=input_size[0],
            size_divisor=32,
            extra_pad_ratio=0.5)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

model = dict(
    bbox_head=dict(
        head_module=dict(num_classes=num_classes),
        loss=dict(
            box_gain=0.05,
            obj_gain=1.0,
            cls_gain=0.5,
            scale_gains=False)))

optim_wrapper = dict(
    optimizer=dict(batch_size_per_gpu=train_batch_size_per_gpu),
    paramwise_cfg=dict(base_total_batch_size=train_batch_size_per_gpu))
default_hooks = dict(
    param_scheduler=dict(
        max_epochs=max_epochs, warmup_epochs=1, warmup_mim_iter=0),
    logger=dict(interval=10),
    checkpoint=dict(interval=val_interval, max_keep_ckpts=1))
train_cfg = dict(
    max_epochs=max_epochs, val_interval=val_interval, dynamic_intervals=None)
