"""The COCO training configs against the official recipe.

The expected values are a table written from the official hyp files and
train.py / test.py (WongKinYiu/yolov7: data/hyp.scratch.*.yaml, cfg/, train.py,
test.py), independent of
the config files, so a typo in a config fails here.
"""
from typing import Iterator, List

import pytest
from mmengine.config import Config

from helpers.paths import ROOT
CONFIGS = ROOT / 'configs'

# hyp.scratch.{p5,p6,tiny}.yaml, written from the official files
HYP = {
    'p5': dict(lr0=0.01, lrf=0.1, box=0.05, cls=0.3, obj=0.7, translate=0.2,
               scale=0.9, mixup=0.15, paste_in=0.15),
    'p6': dict(lr0=0.01, lrf=0.2, box=0.05, cls=0.3, obj=0.7, translate=0.2,
               scale=0.9, mixup=0.15, paste_in=0.15),
    'tiny': dict(lr0=0.01, lrf=0.01, box=0.05, cls=0.5, obj=1.0,
                 translate=0.1, scale=0.5, mixup=0.05, paste_in=0.05),
}
COMMON_HYP = dict(momentum=0.937, weight_decay=0.0005, warmup_epochs=3,
                  warmup_momentum=0.8, warmup_bias_lr=0.1, hsv_h=0.015,
                  hsv_s=0.7, hsv_v=0.4, fliplr=0.5, flipud=0.0, degrees=0.0,
                  shear=0.0, perspective=0.0, mosaic=1.0, copy_paste=0.0,
                  loss_ota=1, cls_pw=1.0, obj_pw=1.0, iou_t=0.2,
                  anchor_t=4.0, fl_gamma=0.0)
ANCHORS = {
    'p5': [[(12, 16), (19, 36), (40, 28)], [(36, 75), (76, 55), (72, 146)],
           [(142, 110), (192, 243), (459, 401)]],
    'tiny': [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)],
             [(116, 90), (156, 198), (373, 326)]],
    'p6': [[(19, 27), (44, 40), (38, 94)], [(96, 68), (86, 152), (180, 137)],
           [(140, 301), (303, 264), (238, 542)],
           [(436, 615), (739, 380), (925, 792)]],
}
# test.py's default --batch-size (rectangular batches of this many images)
OFFICIAL_TEST_BATCH_SIZE = 32
# config name -> (hyp family, input size, strides, aux head)
MODELS = {
    'tiny': ('tiny', 640, [8, 16, 32], False),
    'l': ('p5', 640, [8, 16, 32], False),
    'x': ('p5', 640, [8, 16, 32], False),
    'w6': ('p6', 1280, [8, 16, 32, 64], True),
    'e6': ('p6', 1280, [8, 16, 32, 64], True),
    'd6': ('p6', 1280, [8, 16, 32, 64], True),
    'e6e': ('p6', 1280, [8, 16, 32, 64], True),
}


def load(arch: str) -> Config:
    return Config.fromfile(str(CONFIGS / f'yolov7_{arch}_coco.py'))


def walk(transforms) -> Iterator[dict]:
    """Every transform dict in a pipeline, nested ones included."""
    if isinstance(transforms, dict):
        yield transforms
        for key in ('transforms', 'pre_transform'):
            if key in transforms:
                yield from walk(transforms[key])
    elif isinstance(transforms, (list, tuple)):
        for item in transforms:
            yield from walk(item)


def of_type(pipeline, name: str) -> List[dict]:
    return [t for t in walk(pipeline) if t.get('type') == name]


@pytest.mark.parametrize('arch', sorted(MODELS))
def test_hyp_is_the_official_file(arch):
    """The recipe's hyp dict holds every key of the official file, with the
    official values."""
    family = MODELS[arch][0]
    assert dict(load(arch).hyp) == pytest.approx(
        dict(HYP[family], **COMMON_HYP))


@pytest.mark.parametrize('arch', sorted(MODELS))
def test_train_pipeline_matches_hyp(arch):
    family, size, _, _ = MODELS[arch]
    hyp = dict(HYP[family], **COMMON_HYP)
    cfg = load(arch)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert (cfg.train_dataloader.collate_fn.type ==
            'yolov5_collate_with_files')
    # the official __getitem__ order: mosaic (4 at 80 %, 9 at 20 %) +
    # random_perspective, mixup, HSV, paste_in, flips, packing
    assert [t.type for t in pipeline] == [
        'YOLOv7MosaicPerspective', 'YOLOv7MixUp', 'YOLOv7HSVAug',
        'YOLOv7PasteIn', 'mmdet.RandomFlip', 'mmdet.PackDetInputs'
    ]
    geometry, mixup, hsv, paste_in, flip, _ = pipeline
    for g in (geometry, *mixup.pre_transform):
        assert tuple(g.img_scale) == (size, size)
        assert g.mosaic9 == 0.2
        for key in ('degrees', 'translate', 'scale', 'shear',
                    'perspective'):
            assert g[key] == pytest.approx(hyp[key]), key
    assert geometry.mosaic == hyp['mosaic']
    # the second image of a mixup is always a mosaic
    mixup_geometry, = mixup.pre_transform
    assert mixup_geometry.type == 'YOLOv7MosaicPerspective'
    assert mixup_geometry.mosaic == 1.0
    assert mixup.prob == pytest.approx(hyp['mixup'])
    assert (mixup.alpha, mixup.beta) == (8.0, 8.0)
    assert (hsv.hsv_h, hsv.hsv_s, hsv.hsv_v) == (
        hyp['hsv_h'], hyp['hsv_s'], hyp['hsv_v'])
    assert hsv.on_device is True  # drawn here, applied by the model's device
    assert paste_in.prob == pytest.approx(hyp['paste_in'])
    assert tuple(paste_in.img_scale) == (size, size)
    assert flip.prob == hyp['fliplr'] and 'direction' not in flip
    assert cfg.train_dataloader.dataset.type == 'YOLOv7CocoDataset'
    assert cfg.train_dataloader.dataset.cache_images is None


@pytest.mark.parametrize('arch', sorted(MODELS))
def test_evaluation_matches_official_test(arch):
    _, size, strides, _ = MODELS[arch]
    cfg = load(arch)
    dataset = cfg.val_dataloader.dataset
    resize, = of_type(dataset.pipeline, 'YOLOv5KeepRatioResize')
    letterbox, = of_type(dataset.pipeline, 'LetterResize')
    assert tuple(resize.scale) == tuple(letterbox.scale) == (size, size)
    assert letterbox.allow_scale_up is False
    shapes = dataset.batch_shapes_cfg
    assert shapes.type == 'BatchShapePolicy'
    assert shapes.img_size == size
    assert shapes.size_divisor == max(strides)
    assert shapes.extra_pad_ratio == 0.5
    # official test.py: --batch-size 32, rect batches of that many images
    assert cfg.val_dataloader.batch_size == OFFICIAL_TEST_BATCH_SIZE
    assert shapes.batch_size == OFFICIAL_TEST_BATCH_SIZE
    assert cfg.test_dataloader == cfg.val_dataloader

    test_cfg = cfg.model.test_cfg
    assert test_cfg.score_thr == 0.001
    assert test_cfg.nms == dict(type='nms', iou_threshold=0.65)
    assert test_cfg.max_per_img == 300
    assert test_cfg.multi_label is True

    evaluator = cfg.val_evaluator
    assert evaluator.type == 'mmdet.CocoMetric'
    assert evaluator.ann_file == (
        'data/coco/annotations/instances_val2017.json')
    # pycocotools: mAP counts maxDets == 100, mAP_50 counts maxDets[2]
    assert list(evaluator.proposal_nums)[2] == 100


@pytest.mark.parametrize('arch', sorted(MODELS))
def test_model_and_loss_match_official(arch):
    family, size, strides, aux = MODELS[arch]
    hyp = HYP[family]
    cfg = load(arch)
    head = cfg.model.bbox_head
    assert cfg.model.type == 'YOLOv7Detector'
    assert head.type == 'IDetectHead'
    assert head.head_module.num_classes == 80
    assert list(head.head_module.featmap_strides) == strides
    assert list(head.prior_generator.strides) == strides
    anchors = [[tuple(a) for a in level]
               for level in head.prior_generator.base_sizes]
    assert anchors == ANCHORS[family]
    assert ('aux_in_channels' in head.head_module) is aux

    loss = head.loss
    assert loss.type == 'ComputeLossOTA'
    assert (loss.box_gain, loss.cls_gain, loss.obj_gain) == (
        hyp['box'], hyp['cls'], hyp['obj'])
    # the official rules scale the hyp gains for nc, levels, image size
    assert loss.get('scale_gains', True) is True
    assert loss.nominal_img_size == size
    # hyp loss_ota: 1: the lead assigner is OTA's, set where mmdet sets
    # assigners (model.train_cfg, the head's train_cfg), not in the loss
    assert 'assigner' not in loss and 'aux_assigner' not in loss
    assert cfg.model.train_cfg.assigner.type == 'SimOTAAssigner'
    assert cfg.model.train_cfg.aux_assigner.type == 'V7AuxAssigner'
    assert tuple(cfg.img_scale) == (size, size)
    assert 'input_size' not in cfg  # one name for the input size
    # applies the HSV gains the pipeline leaves to it (on_device)
    assert cfg.model.data_preprocessor.type == 'YOLOv7DataPreprocessor'


@pytest.mark.parametrize('arch', sorted(MODELS))
def test_optimization_matches_official(arch):
    family, _, _, _ = MODELS[arch]
    hyp = dict(HYP[family], **COMMON_HYP)
    cfg = load(arch)
    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'SummedAccumulationOptimWrapper'
    assert wrapper.constructor == 'NominalBatchOptimConstructor'
    assert wrapper.paramwise_cfg == dict(base_total_batch_size=64)
    assert 'accumulative_counts' not in wrapper  # derived from the batch
    optimizer = wrapper.optimizer
    assert optimizer.type == 'SGD' and optimizer.nesterov is True
    assert optimizer.lr == hyp['lr0']
    assert optimizer.momentum == hyp['momentum']
    assert optimizer.weight_decay == hyp['weight_decay']
    assert optimizer.batch_size_per_gpu == cfg.train_dataloader.batch_size

    scheduler = cfg.default_hooks.param_scheduler
    assert scheduler.type == 'YOLOv7ParamSchedulerHook'
    assert scheduler.scheduler_type == 'cosine'
    assert scheduler.lr_factor == hyp['lrf']
    assert scheduler.max_epochs == cfg.train_cfg.max_epochs == 300
    assert scheduler.warmup_epochs == hyp['warmup_epochs']
    assert scheduler.warmup_mim_iter == 1000
    assert scheduler.warmup_bias_lr == hyp['warmup_bias_lr']
    assert scheduler.warmup_momentum == hyp['warmup_momentum']
    assert cfg.get('param_scheduler') is None

    ema, = [h for h in cfg.custom_hooks if 'EMA' in h.type]
    assert ema.type == 'OptimStepEMAHook'
    assert ema.ema_type == 'ExpMomentumEMA'
    # decay 0.9999 * (1 - exp(-updates / 2000)), buffers averaged too
    assert (ema.momentum, ema.gamma) == (0.0001, 2000)
    assert ema.update_buffers is True


@pytest.mark.parametrize('arch', ['tiny', 'l', 'w6'])
def test_train_and_val_pipelines_run(arch, tmp_path):
    """The recipe's transforms build and produce inputs of the recipe's
    size (COCO replaced by a few synthetic images)."""
    from mmengine.registry import init_default_scope
    from mmyolo.registry import DATASETS

    import mmyolo_ext  # noqa: F401
    _, size, _, _ = MODELS[arch]
    cfg = load(arch)
    init_default_scope('mmyolo')
    spec = dict(num_train=4, num_val=2, img_size=160, seed=0)
    data = dict(
        type='SyntheticShapesDataset',
        data_root=str(tmp_path / 'shapes'),
        generate=spec)
    train = DATASETS.build(
        dict(
            cfg.train_dataloader.dataset,
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'),
            **data))
    val = DATASETS.build(
        dict(
            cfg.val_dataloader.dataset,
            ann_file='annotations/instances_val.json',
            data_prefix=dict(img='val/'),
            **data))
    for i in range(2):
        sample = train[i]
        assert tuple(sample['inputs'].shape) == (3, size, size)
        boxes = sample['data_samples'].gt_instances.bboxes.tensor
        assert (boxes >= 0).all() and (boxes <= size).all()
    sample = val[0]
    # the official rectangular shape of a square image: the input size
    # plus half a stride, rounded up to a stride multiple
    stride = max(MODELS[arch][2])
    side = -(-(size // stride + 0.5) // 1) * stride
    assert tuple(sample['inputs'].shape[1:]) == (side, side)


def test_pipeline_builder_refuses_what_it_cannot_build():
    """A hyp without one of the keys the pipeline reads, or with the
    official copy_paste on (not implemented), is refused by name."""
    from mmyolo_ext.datasets.transforms.recipe_pipelines import \
        yolov7_train_pipeline
    hyp = dict(HYP['p5'], **COMMON_HYP)
    assert yolov7_train_pipeline(hyp, (640, 640))[0]['scale'] == 0.9
    with pytest.raises(KeyError, match='fliplr'):
        yolov7_train_pipeline(
            {k: v for k, v in hyp.items() if k != 'fliplr'}, (640, 640))
    with pytest.raises(NotImplementedError, match='copy_paste=0.1'):
        yolov7_train_pipeline(dict(hyp, copy_paste=0.1), (640, 640))
