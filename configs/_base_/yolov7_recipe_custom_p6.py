# The custom recipe (yolov7_recipe_custom.py) for the P6 models at 1280: the
# official P6 fine-tuning command (README: train_aux.py --img 1280 1280
# --batch-size 16 --hyp data/hyp.scratch.custom.yaml) keeps the custom hyp
# of the P5 models - not hyp.scratch.p6 -; what changes is the input size,
# the letterbox stride of the rectangular validation batches (64, the
# largest stride, as train_aux.py and test.py take max(stride)) and OTA for
# the lead head whatever ota says (train_aux.py has only ComputeLossAuxOTA,
# whose aux assigner extends the lead's OTA).
_base_ = ['./yolov7_recipe_custom.py']

from mmyolo_ext.datasets.transforms.recipe_pipelines import (  # noqa: E402
    letterbox_test_pipeline, yolov7_train_pipeline)

img_scale = (1280, 1280)  # (width, height) of training and test inputs
size_divisor = 64  # the largest stride: letterbox batch shapes

# ---- what the custom recipe derives from img_scale, re-derived -----------
# (a --cfg-options img_scale=... is substituted in both files)
train_pipeline = yolov7_train_pipeline(_base_.hyp, img_scale)
test_pipeline = letterbox_test_pipeline(
    img_scale, meta_keys=_base_.test_pipeline[-1]['meta_keys'])
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        pipeline=test_pipeline,
        batch_shapes_cfg=dict(
            img_size=img_scale[0], size_divisor=size_divisor)))
test_dataloader = val_dataloader
recipe_model = dict(
    bbox_head=dict(loss=dict(nominal_img_size=img_scale[0])),
    train_cfg=dict(assigner=dict(type='SimOTAAssigner')))
custom_hooks = [
    dict(h, img_size=img_scale) if h.type == 'AutoAnchorHook' else h
    for h in _base_.custom_hooks
]
