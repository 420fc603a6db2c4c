"""The recipes' two pipelines, defined once and built from the hyp values.

A config calls these and gets plain lists of transform dicts, which it can
print, index and swap as any MMYOLO pipeline::

    from mmyolo_ext.datasets.transforms.recipe_pipelines import (
        letterbox_test_pipeline, yolov7_train_pipeline)
    train_pipeline = yolov7_train_pipeline(hyp, img_scale)
"""
from typing import List, Optional, Sequence, Tuple

# the official hyp keys the train pipeline reads
TRAIN_HYP_KEYS = ('mosaic', 'degrees', 'translate', 'scale', 'shear',
                  'perspective', 'mixup', 'paste_in', 'hsv_h', 'hsv_s',
                  'hsv_v', 'flipud', 'fliplr')
MOSAIC9_PROB = 0.2  # __getitem__: load_mosaic9 when random() >= 0.8
MIXUP_BETA = 8.0  # __getitem__: r = np.random.beta(8.0, 8.0)
# hsv_gains: drawn by YOLOv7HSVAug(on_device=True), applied by the model's
# YOLOv7DataPreprocessor
TRAIN_META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'flip',
                   'flip_direction', 'hsv_gains')
TEST_META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                  'scale_factor', 'pad_param')


def yolov7_train_pipeline(hyp: dict,
                          img_scale: Tuple[int, int],
                          backend_args: Optional[dict] = None,
                          hsv_on_device: bool = True) -> List[dict]:
    """The official training augmentation (``LoadImagesAndLabels`` with
    ``augment=True``) for ``hyp`` at ``img_scale``, in its order: mosaic
    (4 or 9 images) or letterbox + random_perspective; mixup (another
    mosaic); HSV; paste_in; up-down and left-right flips; packing. Steps
    whose probability is 0 (mixup, paste_in, flipud) are left out.

    With ``hsv_on_device`` (the recipes' choice) the HSV step draws each
    sample's gains and the model's ``YOLOv7DataPreprocessor`` applies them
    to the batch on its device: the two colour conversions of every sample
    leave the data workers (``benchmarks/pipeline.py`` measures both)."""
    missing = [k for k in TRAIN_HYP_KEYS if k not in hyp]
    if missing:
        raise KeyError(f'hyp lacks {missing} (the official hyp keys: '
                       f'{", ".join(TRAIN_HYP_KEYS)})')
    if hyp.get('copy_paste', 0):
        raise NotImplementedError(
            f"hyp copy_paste={hyp['copy_paste']}: the official copy_paste "
            'is not implemented (every official hyp file has 0)')
    img_scale = tuple(img_scale)
    geometry = dict(
        type='YOLOv7MosaicPerspective',
        img_scale=img_scale,
        mosaic=hyp['mosaic'],
        mosaic9=MOSAIC9_PROB,
        degrees=hyp['degrees'],
        translate=hyp['translate'],
        scale=hyp['scale'],
        shear=hyp['shear'],
        perspective=hyp['perspective'],
        backend_args=backend_args)
    pipeline = [geometry]
    if hyp['mixup']:
        pipeline.append(
            dict(
                type='YOLOv7MixUp',
                prob=hyp['mixup'],
                alpha=MIXUP_BETA,
                beta=MIXUP_BETA,
                # the second image is always a mosaic
                pre_transform=[dict(geometry, mosaic=1.0)]))
    pipeline.append(
        dict(
            type='YOLOv7HSVAug',
            hsv_h=hyp['hsv_h'],
            hsv_s=hyp['hsv_s'],
            hsv_v=hyp['hsv_v'],
            on_device=hsv_on_device))
    if hyp['paste_in']:
        pipeline.append(
            dict(
                type='YOLOv7PasteIn',
                prob=hyp['paste_in'],
                img_scale=img_scale,
                backend_args=backend_args))
    if hyp['flipud']:
        pipeline.append(
            dict(type='mmdet.RandomFlip', prob=hyp['flipud'],
                 direction='vertical'))
    pipeline += [
        dict(type='mmdet.RandomFlip', prob=hyp['fliplr']),
        dict(type='mmdet.PackDetInputs', meta_keys=TRAIN_META_KEYS)
    ]
    return pipeline


def letterbox_test_pipeline(
        img_scale: Tuple[int, int],
        backend_args: Optional[dict] = None,
        meta_keys: Sequence[str] = TEST_META_KEYS) -> List[dict]:
    """The official test.py input: the long side resized to the input size
    (never up), letterboxed to the batch shape (``batch_shapes_cfg``); a bad
    image becomes a grey one so every validation image keeps its place."""
    img_scale = tuple(img_scale)
    return [
        dict(
            type='TolerantLoadImageFromFile',
            on_bad='blank',
            backend_args=backend_args),
        dict(type='YOLOv5KeepRatioResize', scale=img_scale),
        dict(
            type='LetterResize',
            scale=img_scale,
            allow_scale_up=False,
            pad_val=dict(img=114)),
        dict(type='LoadAnnotations', with_bbox=True, _scope_='mmdet'),
        dict(type='mmdet.PackDetInputs', meta_keys=tuple(meta_keys))
    ]
