"""configs/examples/: an installed MMYOLO config with our head and loss, an
installed MMDetection config with our backbone, reached only through
``custom_imports``. Each trains a few iterations on a small synthetic set."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmyolo_ext.demo_data import generate_shapes_dataset

from helpers.paths import ROOT
EXAMPLES = ROOT / 'configs' / 'examples'
SPEC = dict(num_train=8, num_val=2, img_size=96, seed=1)


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp('data') / 'shapes'
    generate_shapes_dataset(str(root), **SPEC)
    return str(root) + '/'


def small_train_config(example: str, data_root: str, work_dir: Path,
                       pipeline: list) -> Config:
    """The example config, unchanged but for: the synthetic data, a short
    run (one epoch of 4 iterations) and no validation or checkpoints."""
    cfg = Config.fromfile(str(EXAMPLES / example))
    cfg.work_dir = str(work_dir)
    cfg.train_dataloader.update(
        batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset = dict(
        type='SyntheticShapesDataset',
        data_root=data_root,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        generate=SPEC,
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=pipeline)
    cfg.train_cfg = dict(
        type='EpochBasedTrainLoop', max_epochs=1, val_interval=10)
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.pop('visualization', None)
    cfg.launcher = 'none'
    return cfg


def test_mmyolo_config_with_our_head_and_loss(shapes_root, tmp_path):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='mmdet.PackDetInputs')
    ]
    cfg = small_train_config('mmyolo_yolov7_tiny_idetect_head.py',
                             shapes_root, tmp_path, pipeline)
    assert cfg.default_scope == 'mmyolo'
    runner = Runner.from_cfg(cfg)
    head = runner.model.bbox_head
    assert type(head).__name__ == 'IDetectHead'
    assert type(head).__module__.startswith('mmyolo_ext.')
    assert type(head.loss_module).__name__ == 'ComputeLossOTA'
    # the rest stays MMYOLO's
    assert type(runner.model.backbone).__module__.startswith('mmyolo.')
    assert type(runner.model.neck).__module__.startswith('mmyolo.')
    _train_few_iterations(runner, 'bbox_head')


def test_mmdet_config_with_our_backbone(shapes_root, tmp_path):
    cfg = small_train_config(
        'mmdet_yolox_tiny_elan_backbone.py', shapes_root, tmp_path, [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True)
        ])
    # YOLOX's dataset wrapper stays (its mode-switch hook needs it), with
    # light transforms instead of mosaic, affine and mixup
    cfg.train_dataloader.dataset = dict(
        type='MultiImageMixDataset',
        dataset=cfg.train_dataloader.dataset,
        pipeline=[dict(type='PackDetInputs')])
    assert cfg.default_scope == 'mmdet'
    # YOLOX resizes batches to 320-640 px every 10 iterations; off here to
    # keep the test short on a CPU
    cfg.model.data_preprocessor.batch_augments = None
    runner = Runner.from_cfg(cfg)
    backbone = runner.model.backbone
    assert type(backbone).__name__ == 'ELANBackbone'
    assert type(backbone).__module__.startswith('mmyolo_ext.')
    assert type(runner.model.bbox_head).__module__.startswith('mmdet.')
    _train_few_iterations(runner, 'backbone')


def _train_few_iterations(runner: Runner, module: str) -> None:
    params = dict(runner.model.named_parameters())
    before = {
        name: p.detach().clone()
        for name, p in params.items() if name.startswith(module + '.')
    }
    assert before
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 4  # 8 images in batches of 2
    assert torch.isfinite(torch.as_tensor(losses)).all()
    assert any(not torch.equal(value, params[name].detach())
               for name, value in before.items()), (
                   f'training did not update {module}')
