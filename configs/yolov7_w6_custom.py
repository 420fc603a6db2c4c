# yolov7-w6 on your own data in the official YOLO layout: the data, recipe
# and command line of yolov7_l_custom.py (read its header) with the P6 model
# of models/yolov7_w6.py (four levels P3-P6, strides 8..64, the lead head
# plus the auxiliary head trained with AuxOTA: V7AuxAssigner candidates,
# aux terms weighted 0.25; inference uses the lead head only) at 1280.
#
#   python tools/model_converters/convert_yolov7_weights.py yolov7-w6_training.pt \
#       work_dirs/yolov7_w6_official.pth  # with the aux head: fine-tunes all
#   python tools/train.py configs/yolov7_w6_custom.py --cfg-options \
#       data_yaml=path/to/data.yaml max_epochs=100 \
#       load_from=work_dirs/yolov7_w6_official.pth
#
# The official P6 fine-tuning command (README: train_aux.py --img 1280 1280
# --batch-size 16 --hyp data/hyp.scratch.custom.yaml) keeps the custom hyp
# of the P5 models - not hyp.scratch.p6 - so the recipe is that of
# yolov7_l_custom.py unchanged (lrf 0.1, scale 0.5, mixup 0, batch 16);
# what P6 changes is the model, the input size and the letterbox stride of
# the rectangular validation batches (64, the largest stride, as
# train_aux.py and test.py take max(stride)). The loss scales its gains for
# four levels (box, cls, obj *= 3 / 4; obj balance 4, 1, 0.25, 0.06).
_base_ = ['./yolov7_l_custom.py']

img_scale = (1280, 1280)  # (width, height) of training and test inputs
size_divisor = 64  # letterbox stride of the validation batch shapes

# ---- the w6 model (as models/yolov7_w6.py sets it on the L model) ----------
strides = [8, 16, 32, 64]
anchors = [[(19, 27), (44, 40), (38, 94)], [(96, 68), (86, 152), (180, 137)],
           [(140, 301), (303, 264), (238, 542)],
           [(436, 615), (739, 380), (925, 792)]]  # per level (w, h) in pixels
model = dict(
    backbone=dict(arch='w6'),
    neck=dict(arch='w6'),
    bbox_head=dict(
        head_module=dict(
            in_channels=[256, 512, 768, 1024],
            aux_in_channels=[320, 640, 960, 1280],
            featmap_strides=strides),
        prior_generator=dict(base_sizes=anchors, strides=strides),
        # OTA for the lead head whatever yolov7_l_custom.py's ota says: the
        # official train_aux.py has only ComputeLossAuxOTA, and the aux
        # head's assigner extends the lead's OTA
        loss=dict(
            nominal_img_size=img_scale[0],
            assigner=dict(type='SimOTAAssigner'))))

# ---- what yolov7_l_custom.py derives from img_scale, at this size ----------
# (a base file is evaluated before this one: its img_scale stays 640 there.
# A --cfg-options img_scale=... is substituted in both files.)
random_affine = dict(
    _base_.random_affine, border=(-img_scale[0] // 2, -img_scale[1] // 2))
mosaic_pipeline = dict(
    _base_.mosaic_pipeline,
    transforms=[[dict(mosaic, img_scale=img_scale), random_affine]
                for mosaic, _ in _base_.mosaic_pipeline.transforms])
train_pipeline = [
    *_base_.pre_transform, mosaic_pipeline, *_base_.train_pipeline[-3:]
]
test_pipeline = [
    dict(t, scale=img_scale) if 'scale' in t else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        pipeline=test_pipeline,
        batch_shapes_cfg=dict(
            img_size=img_scale[0], size_divisor=size_divisor)))
test_dataloader = val_dataloader
custom_hooks = [
    dict(h, img_size=img_scale) if h.type == 'AutoAnchorHook' else h
    for h in _base_.custom_hooks
]
