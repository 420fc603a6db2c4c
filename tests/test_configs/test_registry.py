"""`import mmyolo_ext` registers every module, reachable three ways: our own
configs, an mmyolo config (default_scope 'mmyolo') and an mmdet config
(default_scope 'mmdet') that add ``custom_imports=['mmyolo_ext']``."""
import textwrap
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, MODELS, TASK_UTILS

from helpers.paths import ROOT
CUSTOM_IMPORTS = ("custom_imports = dict(imports=['mmyolo_ext'], "
                  'allow_failed_imports=False)')


def load_config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / 'user_config.py'
    path.write_text(textwrap.dedent(text))
    return Config.fromfile(str(path))  # performs custom_imports


def build_in_scope(registry, cfg: dict, scope: str):
    """Build as a Runner does: from mmengine's root registry, under the
    config's default scope."""
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg)


def test_own_config_builds_our_modules():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'yolov7_tiny_coco.py'))
    model = build_in_scope(MODELS, cfg.model, cfg.default_scope)
    from mmyolo_ext.models.backbones import ELANBackbone
    from mmyolo_ext.models.dense_heads import IDetectHead
    from mmyolo_ext.models.necks import SPPCSPCNeck
    assert isinstance(model.backbone, ELANBackbone)
    assert isinstance(model.neck, SPPCSPCNeck)
    assert isinstance(model.bbox_head, IDetectHead)


def test_mmyolo_config_plain_names(tmp_path):
    """mmyolo's own YOLODetector with our backbone, neck and head by plain
    names, as a user's mmyolo config would write them."""
    tiny = Config.fromfile(
        str(ROOT / 'configs' / '_base_' / 'models' / 'yolov7_tiny.py'))
    cfg = load_config(tmp_path, f"""
        default_scope = 'mmyolo'
        {CUSTOM_IMPORTS}
        model = {tiny.model.to_dict()!r}
        model['type'] = 'YOLODetector'
        """)
    model = build_in_scope(MODELS, cfg.model, 'mmyolo')
    assert type(model).__module__.startswith('mmyolo.models')
    assert type(model.backbone).__name__ == 'ELANBackbone'
    assert type(model.bbox_head).__name__ == 'IDetectHead'
    raw = model(torch.zeros(1, 3, 64, 64), mode='tensor')
    assert [tuple(t.shape) for t in raw] == [(1, 255, 8, 8), (1, 255, 4, 4),
                                            (1, 255, 2, 2)]


def test_mmdet_config_plain_names(tmp_path):
    """mmdet's YOLOX with our ELANBackbone by its plain name."""
    cfg = load_config(tmp_path, f"""
        default_scope = 'mmdet'
        {CUSTOM_IMPORTS}
        model = dict(
            type='YOLOX',
            data_preprocessor=dict(type='DetDataPreprocessor'),
            backbone=dict(type='ELANBackbone', arch='tiny'),
            neck=dict(type='YOLOXPAFPN', in_channels=[128, 256, 512],
                      out_channels=64, num_csp_blocks=1),
            bbox_head=dict(type='YOLOXHead', num_classes=3, in_channels=64,
                           feat_channels=64),
            train_cfg=dict(assigner=dict(type='SimOTAAssigner')),
            test_cfg=dict(score_thr=0.01, nms=dict(type='nms',
                                                   iou_threshold=0.65)))
        """)
    model = build_in_scope(MODELS, cfg.model, 'mmdet')
    assert type(model).__module__.startswith('mmdet.models')
    assert type(model.backbone).__name__ == 'ELANBackbone'
    feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [8, 4, 2]


def test_simota_name_keeps_mmdet_and_reaches_ours_with_scope():
    """mmdet owns the name SimOTAAssigner: in mmdet's scope the plain name
    stays mmdet's; the mmyolo_ext. prefix picks ours from any scope; in
    mmyolo's scope (which has none) the plain name is ours."""
    from mmdet.models.task_modules.assigners import \
        SimOTAAssigner as MMDetSimOTA
    from mmyolo_ext.models.task_modules.assigners import SimOTAAssigner
    plain = dict(type='SimOTAAssigner')
    ours = dict(type='mmyolo_ext.SimOTAAssigner')
    assert type(build_in_scope(TASK_UTILS, plain, 'mmdet')) is MMDetSimOTA
    assert type(build_in_scope(TASK_UTILS, ours, 'mmdet')) is SimOTAAssigner
    assert type(build_in_scope(TASK_UTILS, plain, 'mmyolo')) is SimOTAAssigner
    assert type(build_in_scope(TASK_UTILS, ours, 'mmyolo')) is SimOTAAssigner


@pytest.mark.parametrize('name', [
    'ELANBackbone', 'SPPCSPCNeck', 'IDetectHead', 'ComputeLossOTA',
    'YOLOv7Detector'
])
@pytest.mark.parametrize('scope', ['mmyolo', 'mmdet'])
def test_model_names_in_peer_scopes(name, scope):
    import mmyolo_ext.registry as ours
    with MODELS.switch_scope_and_registry(scope) as scope_registry:
        assert scope_registry.scope == scope
        assert scope_registry.get(name) is ours.MODELS.get(name)


@pytest.mark.parametrize('registry,name', [
    ('TASK_UTILS', 'YOLOv5Assigner'), ('TASK_UTILS', 'V7AuxAssigner'),
    ('HOOKS', 'ReparameterizeHook')])
def test_other_names_in_mmyolo_scope(registry, name):
    import mmyolo.registry as mmyolo_registry

    import mmyolo_ext.registry as ours
    assert getattr(mmyolo_registry, registry).get(name) is getattr(
        ours, registry).get(name)
