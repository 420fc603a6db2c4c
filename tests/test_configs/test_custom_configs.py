"""The custom-data configs: num_classes from the data.yaml (1 and 3
classes), --cfg-options variables recomputing what the configs derive from
them, and a 2-iteration training run + evaluation through tools/train.py on
a tiny YOLO-layout dataset."""
import os
import subprocess
import sys

import pytest

from mmyolo_ext.demo_data import export_yolo_layout, generate_shapes_dataset
from mmyolo_ext.engine.config_variables import load_config
from mmyolo_ext.registry import MODELS

from helpers.paths import ROOT
CONFIGS = {
    'tiny': ROOT / 'configs' / 'yolov7_tiny_custom.py',
    'l': ROOT / 'configs' / 'yolov7_l_custom.py'
}


@pytest.fixture(scope='module')
def yolo_data(tmp_path_factory):
    """The shapes data (3 classes, 4 + 2 images of 128 px) in the YOLO
    layout, and a 1-class data.yaml over the same images."""
    base = tmp_path_factory.mktemp('custom')
    generate_shapes_dataset(str(base / 'shapes'), num_train=4, num_val=2,
                            img_size=128, seed=5)
    three = export_yolo_layout(str(base / 'shapes'), str(base / 'yolo'))
    one = base / 'yolo' / 'one_class.yaml'
    one.write_text('train: images/train\nval: images/val\nnc: 1\n'
                   "names: ['thing']\n")
    return dict(three=three, one=str(one))


@pytest.mark.parametrize('arch', ['tiny', 'l'])
def test_variables_reach_everything_derived(arch, yolo_data):
    cfg = load_config(
        str(CONFIGS[arch]),
        dict(data_yaml=yolo_data['three'], max_epochs=7,
             train_batch_size_per_gpu=3, img_scale=(192, 192),
             cache_images='ram'))
    assert cfg.num_classes == 3
    assert cfg.model.bbox_head.head_module.num_classes == 3
    # hyp.scratch.custom (data/hyp.scratch.custom.yaml): scale 0.5,
    # translate 0.2, mosaic 1.0, mixup 0, paste_in 0
    geometry = cfg.train_dataloader.dataset.pipeline[0]
    assert geometry['type'] == 'YOLOv7MosaicPerspective'
    assert geometry['img_scale'] == (192, 192)
    assert (geometry['scale'], geometry['translate']) == (0.5, 0.2)
    assert geometry['mosaic'] == 1.0
    assert [t['type'] for t in cfg.train_dataloader.dataset.pipeline] == [
        'YOLOv7MosaicPerspective', 'YOLOv7HSVAug', 'mmdet.RandomFlip',
        'mmdet.PackDetInputs'
    ]  # mixup 0 and paste_in 0: no such steps
    assert cfg.train_dataloader.dataset.cache_images == 'ram'
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert loader.dataset.type == 'YOLODataset'
        assert loader.dataset.data_yaml == yolo_data['three']
    test = {t['type']: t for t in cfg.val_dataloader.dataset.pipeline}
    assert test['LetterResize']['scale'] == (192, 192)
    assert test['YOLOv5KeepRatioResize']['scale'] == (192, 192)
    assert cfg.val_dataloader.dataset.batch_shapes_cfg.img_size == 192
    assert cfg.val_dataloader.dataset.batch_shapes_cfg.batch_size == 32
    assert cfg.val_evaluator.ann_file is None
    assert cfg.train_dataloader.batch_size == 3
    assert cfg.optim_wrapper.optimizer.batch_size_per_gpu == 3
    assert cfg.default_hooks.param_scheduler.max_epochs == 7
    assert cfg.train_cfg.max_epochs == 7
    assert cfg.model.bbox_head.loss.nominal_img_size == 192
    hooks = {h['type']: h for h in cfg.custom_hooks}
    assert hooks['AutoAnchorHook']['img_size'] == (192, 192)
    assert hooks['AutoAnchorHook']['enabled'] is True
    # the plain mmengine merge leaves the derived values at the defaults
    plain = load_config(str(CONFIGS[arch]),
                        {'train_dataloader.batch_size': 5,
                         'data_yaml': yolo_data['three']})
    assert plain.train_dataloader.batch_size == 5
    assert plain.optim_wrapper.optimizer.batch_size_per_gpu == 16


@pytest.mark.parametrize('classes', [('one', 1), ('three', 3)])
def test_one_value_drives_head_and_loss(classes, yolo_data):
    name, nc = classes
    cfg = load_config(str(CONFIGS['tiny']),
                      dict(data_yaml=yolo_data[name]))
    from mmengine.registry import init_default_scope
    init_default_scope('mmyolo')
    model = MODELS.build(cfg.model)
    head = model.bbox_head
    assert head.num_classes == nc and head.loss_module.num_classes == nc
    assert head.head_module.lead_convs[0].out_channels == 3 * (5 + nc)
    # hyp.scratch.custom cls 0.3, scaled by nc / 80 * 3 / nl (official)
    assert head.loss_module.cls_gain == pytest.approx(0.3 * nc / 80)
    assert head.loss_module.box_gain == pytest.approx(0.05)


def test_missing_data_yaml_is_named():
    with pytest.raises(FileNotFoundError, match='nowhere/data.yaml'):
        load_config(str(CONFIGS['tiny']), dict(data_yaml='nowhere/data.yaml'))


def test_two_training_iterations_and_evaluation(yolo_data, tmp_path):
    work = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    out = subprocess.run([
        sys.executable, str(ROOT / 'tools' / 'train.py'),
        str(CONFIGS['tiny']), '--work-dir', str(work), '--cfg-options',
        f'data_yaml={yolo_data["three"]}', 'max_epochs=1',
        'train_batch_size_per_gpu=2', 'img_scale=(128,128)',
        'train_num_workers=0', 'val_num_workers=0', 'persistent_workers=False'
    ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert 'Epoch(train) [1][2/2]' in log
    assert 'autoanchor:' in log and 'best possible recall' in log
    assert 'coco/bbox_mAP' in log
    assert (work / 'epoch_1.pth').exists()


def test_variable_of_a_base_file_is_recomputed_there():
    """img_scale and hyp live in the recipe bases of the COCO config:
    substituted there, the bases' pipelines and loss follow them; a
    non-literal value is refused."""
    cfg = load_config(str(ROOT / 'configs' / 'yolov7_tiny_coco.py'),
                      dict(img_scale=(320, 320)))
    for geometry in (cfg.train_dataloader.dataset.pipeline[0],
                     *cfg.train_dataloader.dataset.pipeline[1].pre_transform):
        assert geometry['img_scale'] == (320, 320)
    test = {t['type']: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['LetterResize']['scale'] == (320, 320)
    assert cfg.model.bbox_head.loss.nominal_img_size == 320
    hyp = dict(cfg.hyp, scale=0.25, mixup=0.0)
    cfg = load_config(str(ROOT / 'configs' / 'yolov7_tiny_coco.py'),
                      dict(hyp=hyp))
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert pipeline[0]['scale'] == 0.25
    assert 'YOLOv7MixUp' not in [t['type'] for t in pipeline]
    with pytest.raises(ValueError, match='img_scale=.*literal'):
        load_config(str(ROOT / 'configs' / 'yolov7_tiny_coco.py'),
                    dict(img_scale=object()))


@pytest.mark.parametrize('batch, options, accumulate, warmup', [
    (4, {}, 4, 100),  # small data: nominal batch 16, warm-up floor 100
    (4, dict(nominal_batch_size=64, warmup_min_iters=1000), 16, 1000),
])
def test_small_data_accumulation_and_warmup(batch, options, accumulate,
                                            warmup, yolo_data):
    """The official train.py's rules, re-derived: accumulate
    max(round(nbs / batch), 1) iterations, weight decay scaled by
    batch * accumulate / nbs, warm-up max(3 epochs, floor) iterations."""
    from types import SimpleNamespace

    from mmengine.registry import init_default_scope
    from mmyolo_ext.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS
    cfg = load_config(
        str(CONFIGS['tiny']),
        dict(data_yaml=yolo_data['one'], train_batch_size_per_gpu=batch,
             **options))
    init_default_scope('mmyolo')
    nbs = options.get('nominal_batch_size', 16)
    wrapper_cfg = cfg.optim_wrapper.copy()
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(type=wrapper_cfg.pop('constructor'),
             optim_wrapper_cfg=wrapper_cfg,
             paramwise_cfg=wrapper_cfg.pop('paramwise_cfg')))
    wrapper = constructor(MODELS.build(cfg.model))
    assert wrapper._accumulative_counts == max(round(nbs / batch), 1)
    assert wrapper._accumulative_counts == accumulate
    decay = wrapper.optimizer.param_groups[1]['weight_decay']
    assert decay == pytest.approx(0.0005 * batch * accumulate / nbs)
    hook = HOOKS.build(cfg.default_hooks.param_scheduler)
    epoch_of_15 = SimpleNamespace(train_dataloader=range(15))  # 58 images
    assert hook._warmup_iters(epoch_of_15) == max(3 * 15, warmup)


@pytest.mark.parametrize('options, assigner', [
    ({}, 'YOLOv5Assigner'),  # from scratch: the non-OTA assigner
    (dict(load_from='official.pth'), 'SimOTAAssigner'),  # fine-tuning: OTA
    (dict(ota=True), 'SimOTAAssigner'),
    (dict(load_from='official.pth', ota=False), 'YOLOv5Assigner'),
])
def test_ota_when_fine_tuning_unless_forced(options, assigner, yolo_data):
    cfg = load_config(str(CONFIGS['tiny']),
                      dict(data_yaml=yolo_data['one'], **options))
    assert cfg.model.train_cfg.assigner.type == assigner
    assert 'assigner' not in cfg.model.bbox_head.loss
    assert cfg.optim_wrapper.optimizer.type == 'Adam'  # the official --adam
    assert cfg.default_hooks.param_scheduler.warmup_bias_lr == \
        cfg.optim_wrapper.optimizer.lr
