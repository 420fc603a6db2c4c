"""configs/yolov7_w6_custom.py: the w6 model of models/yolov7_w6.py with
the data and recipe of yolov7_l_custom.py at 1280, num_classes from the
data.yaml, and one training iteration through the lead and the auxiliary
head on a tiny YOLO-layout dataset."""

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.models.task_modules.assigners import (SimOTAAssigner,
                                                      V7AuxAssigner)
from mmyolo_ext.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from helpers.paths import ROOT
P6 = ROOT / 'configs' / 'yolov7_w6_custom.py'
NC = 2


@pytest.fixture(scope='module')
def data_yaml(tmp_path_factory) -> str:
    """4 images of 96 x 80 px with 1-2 boxes of both classes."""
    root = tmp_path_factory.mktemp('p6') / 'ds'
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        (root / 'images' / split).mkdir(parents=True)
        (root / 'labels' / split).mkdir(parents=True)
        for i in range(2):
            img = rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)
            assert cv2.imwrite(str(root / f'images/{split}/{i}.jpg'), img)
            rows = [f'{i % NC} 0.5 0.5 0.4 0.5', f'{(i + 1) % NC} 0.3 0.3 '
                    '0.2 0.2'][:i + 1]
            (root / f'labels/{split}/{i}.txt').write_text('\n'.join(rows))
    path = root / 'data.yaml'
    path.write_text('train: images/train\nval: images/val\n'
                    f'nc: {NC}\nnames: [cat, dog]\n')
    return str(path)


def test_model_is_w6_and_recipe_is_the_custom_one(data_yaml):
    cfg = load_config(str(P6), dict(data_yaml=data_yaml))
    assert cfg.num_classes == NC and cfg.class_names == ('cat', 'dog')
    # the model: models/yolov7_w6.py's, with the data.yaml's classes
    w6 = Config.fromfile(str(ROOT / 'configs/_base_/models/yolov7_w6.py'))
    w6.model.bbox_head.head_module.num_classes = NC
    # ComputeLossOTA's default lead assigner, named: the P5 custom recipe's
    # ota=False must not reach the aux-head model (train_aux.py is OTA only);
    # hyp.scratch.custom's gains at the nominal size 1280
    w6.model.bbox_head.loss.update(
        box_gain=0.05, cls_gain=0.3, obj_gain=0.7, nominal_img_size=1280)
    w6.model.train_cfg.assigner = dict(type='SimOTAAssigner')
    assert cfg.model.to_dict() == w6.model.to_dict()
    # the recipe: yolov7_l_custom.py's (hyp.scratch.custom, as train_aux.py
    # is run for P6 fine-tuning), not hyp.scratch.p6
    p5 = load_config(str(ROOT / 'configs/yolov7_l_custom.py'),
                     dict(data_yaml=data_yaml))
    for key in ('optim_wrapper', 'default_hooks', 'train_cfg',
                'val_evaluator', 'train_batch_size_per_gpu'):
        assert cfg[key] == p5[key], key
    assert cfg.default_hooks.param_scheduler.lr_factor == 0.1  # p6: 0.2
    assert cfg.hyp == p5.hyp
    assert not any(t['type'] == 'YOLOv7MixUp'
                   for t in cfg.train_dataloader.dataset.pipeline)
    # the same datasets, pipelines at 1280, batch shapes on stride 64
    for split in ('train_dataloader', 'val_dataloader'):
        ours, theirs = dict(cfg[split].dataset), dict(p5[split].dataset)
        for key in ('pipeline', 'batch_shapes_cfg'):
            ours.pop(key, None)
            theirs.pop(key, None)
        assert ours == theirs
    check_img_scale(cfg, (1280, 1280))
    shapes = cfg.val_dataloader.dataset.batch_shapes_cfg
    assert shapes.size_divisor == 64 and shapes.batch_size == 32
    assert cfg.test_dataloader == cfg.val_dataloader
    # what a run writes to its work_dir reads back
    assert Config.fromstring(cfg.pretty_text, '.py').model == cfg.model


def check_img_scale(cfg, scale) -> None:
    """Every value derived from img_scale is at ``scale``."""
    pipeline = cfg.train_dataloader.dataset.pipeline
    geometry = pipeline[0]
    assert geometry['type'] == 'YOLOv7MosaicPerspective'
    assert geometry['img_scale'] == scale
    assert geometry['scale'] == 0.5  # hyp.scratch.custom
    test = {t['type']: t for t in cfg.val_dataloader.dataset.pipeline}
    assert test['YOLOv5KeepRatioResize']['scale'] == scale
    assert test['LetterResize']['scale'] == scale
    assert cfg.val_dataloader.dataset.batch_shapes_cfg.img_size == scale[0]
    assert cfg.model.bbox_head.loss.nominal_img_size == scale[0]
    hooks = {h['type']: h for h in cfg.custom_hooks}
    assert hooks['AutoAnchorHook']['img_size'] == scale


def test_img_scale_option_reaches_both_files(data_yaml):
    cfg = load_config(str(P6), dict(data_yaml=data_yaml,
                                    img_scale=(384, 384)))
    check_img_scale(cfg, (384, 384))


def test_one_training_iteration_lead_and_aux(data_yaml):
    size = 256
    cfg = load_config(
        str(P6),
        dict(data_yaml=data_yaml, img_scale=(size, size),
             train_batch_size_per_gpu=2, train_num_workers=0,
             persistent_workers=False))
    init_default_scope('mmyolo')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    head = model.bbox_head
    module = head.head_module
    # the head follows the data.yaml: 4 levels, lead and aux, 3 anchors each
    assert head.num_classes == NC and head.loss_module.num_classes == NC
    assert len(module.lead_convs) == len(module.aux_convs) == 4
    for conv in (*module.lead_convs, *module.aux_convs):
        assert conv.out_channels == 3 * (5 + NC)
    loss = head.loss_module
    # built by the head from model.train_cfg: OTA for the lead whatever ota
    assert isinstance(loss.assigner, SimOTAAssigner)
    assert isinstance(loss.aux_assigner, V7AuxAssigner)
    # the official gains for 4 levels (train.py), re-derived
    assert loss.box_gain == pytest.approx(0.05 * 3 / 4)
    assert loss.cls_gain == pytest.approx(0.3 * NC / 80 * 3 / 4)
    assert loss.obj_gain == pytest.approx(0.7 * (size / 640)**2 * 3 / 4)

    wrapper_cfg = cfg.optim_wrapper.copy()
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(type=wrapper_cfg.pop('constructor'),
             optim_wrapper_cfg=wrapper_cfg,
             paramwise_cfg=wrapper_cfg.pop('paramwise_cfg')))
    wrapper = constructor(model)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batch = next(iter(loader))
    assert tuple(batch['inputs'].shape) == (2, 3, size, size)  # mosaic
    model.train()
    losses = model.train_step(batch, wrapper)
    assert set(losses) >= {'loss_box', 'loss_obj', 'loss_cls'}
    terms = {k: v for k, v in losses.items() if 'loss' in k}
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())
    # the log variables of non-finite terms (left out of the total) say none
    assert all(losses[k] == 0 for k in ('nonfinite_box', 'nonfinite_obj',
                                        'nonfinite_cls'))
    # the loss reached both heads at every level (AuxOTA trains the aux head)
    for conv in (*module.lead_convs, *module.aux_convs):
        assert conv.weight.grad is not None
        assert conv.weight.grad.abs().sum() > 0
