# The official recipe for yolov7-tiny: hyp.scratch.tiny.yaml. It differs from
# P5 in the augmentation strength, mixup probability and final lr factor
# (its loss gains, cls 0.5 / obj 1.0, are in models/yolov7_tiny.py).
_base_ = ['./yolov7_recipe_p5.py']

lrf = 0.01
translate = 0.1
scale = 0.5
mixup = 0.05

# rebuilt, since they were made from the P5 values
pre_transform = _base_.pre_transform
input_size = _base_.input_size
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
    prob=_base_.mosaic_probs)
train_pipeline = [
    *pre_transform,
    mosaic_pipeline,
    dict(
        type='YOLOv5MixUp',
        alpha=_base_.mixup_alpha,
        beta=_base_.mixup_beta,
        prob=mixup,
        pre_transform=[*pre_transform, mosaic_pipeline]),
    *_base_.train_pipeline[-3:],  # HSV, flip, pack: unchanged
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
default_hooks = dict(param_scheduler=dict(lr_factor=lrf))
