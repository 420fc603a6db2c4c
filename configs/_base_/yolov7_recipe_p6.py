# The official recipe for the P6 models (yolov7-w6/e6/d6/e6e, train_aux.py):
# hyp.scratch.p6.yaml at 1280. It differs from P5 in the input size, the
# final lr factor and the letterbox stride (64); the auxiliary head and the
# AuxOTA loss are in the models/ files.
_base_ = ['./yolov7_recipe_p5.py']

lrf = 0.2
input_size = (1280, 1280)
train_batch_size_per_gpu = 8  # accumulation makes up the nominal 64

# rebuilt, since they were made from the P5 values
pre_transform = _base_.pre_transform
random_affine = dict(
    type='YOLOv5RandomAffine',
    max_rotate_degree=0.0,
    max_shear_degree=0.0,
    max_translate_ratio=_base_.translate,
    scaling_ratio_range=(1 - _base_.scale, 1.1 + _base_.scale),
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
        prob=_base_.mixup,
        pre_transform=[*pre_transform, mosaic_pipeline]),
    *_base_.train_pipeline[-3:],  # HSV, flip, pack: unchanged
]
train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    dataset=dict(pipeline=train_pipeline))

test_pipeline = [
    _base_.test_pipeline[0],
    dict(type='YOLOv5KeepRatioResize', scale=input_size),
    dict(
        type='LetterResize',
        scale=input_size,
        allow_scale_up=False,
        pad_val=dict(img=114)),
    *_base_.test_pipeline[3:],
]
batch_shapes_cfg = dict(
    type='BatchShapePolicy',
    batch_size=_base_.val_batch_size_per_gpu,
    img_size=input_size[0],
    size_divisor=64,  # the largest stride
    extra_pad_ratio=0.5)
val_dataloader = dict(
    dataset=dict(pipeline=test_pipeline, batch_shapes_cfg=batch_shapes_cfg))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(batch_size_per_gpu=train_batch_size_per_gpu))
default_hooks = dict(param_scheduler=dict(lr_factor=lrf))
