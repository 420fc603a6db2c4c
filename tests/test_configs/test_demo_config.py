"""The embedded demo config, end to end on a few images: it generates its
data, trains, evaluates COCO mAP and writes the curves (PNG and JSON)."""
import json

from mmengine.config import Config
from mmengine.runner import Runner

from helpers.paths import ROOT
DEMO = ROOT / 'configs' / 'yolov7_tiny_demo.py'
SPEC = dict(num_train=8, num_val=4, img_size=160, seed=5)


def test_demo_config_describes_its_data_and_model():
    cfg = Config.fromfile(str(DEMO))
    train = cfg.train_dataloader.dataset
    val = cfg.val_dataloader.dataset
    assert train.type == val.type == 'SyntheticShapesDataset'
    assert train.data_root == val.data_root == 'data/shapes/'
    assert cfg.val_evaluator.ann_file == (
        'data/shapes/annotations/instances_val.json')
    assert cfg.model.bbox_head.head_module.num_classes == 3
    assert any(h.type == 'CurvePlotHook' for h in cfg.custom_hooks)
    assert cfg.load_from is None  # from scratch


def test_demo_trains_evaluates_and_plots(tmp_path):
    data_root = str(tmp_path / 'shapes') + '/'
    cfg = Config.fromfile(str(DEMO))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    for loader, ann in ((cfg.train_dataloader, 'train'),
                        (cfg.val_dataloader, 'val')):
        loader.update(num_workers=0, persistent_workers=False, batch_size=4)
        loader.dataset.update(data_root=data_root, generate=SPEC)
        if ann == 'val':
            loader.dataset.batch_shapes_cfg.batch_size = 4
    cfg.val_evaluator.ann_file = data_root + 'annotations/instances_val.json'
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.param_scheduler.max_epochs = 1
    cfg.default_hooks.checkpoint.interval = -1
    cfg.default_hooks.pop('visualization')

    runner = Runner.from_cfg(cfg)
    runner.train()

    curves = json.loads((tmp_path / 'work' / 'curves.json').read_text())
    assert curves['loss_iters'] == [1, 2]  # 8 images in batches of 4
    assert set(curves['losses']) == {
        'loss', 'loss_box', 'loss_obj', 'loss_cls'
    }
    evaluation, = curves['evals']
    assert evaluation['epoch'] == 1
    assert 0 <= evaluation['coco/bbox_mAP_50'] <= 1
    png = (tmp_path / 'work' / 'curves.png').read_bytes()
    assert png.startswith(b'\x89PNG') and len(png) > 10_000


def test_curve_history_survives_a_checkpoint(tmp_path):
    from types import SimpleNamespace

    from mmyolo_ext.engine.hooks import CurvePlotHook
    runner = SimpleNamespace(iter=0, epoch=0, work_dir=str(tmp_path))
    hook = CurvePlotHook(smooth=2)
    hook.before_train(runner)
    for i in range(3):
        runner.iter = i
        outputs = dict(loss=3. - i, loss_cls=1., acc=0.5)
        if i == 2:
            outputs['loss_aux'] = 0.1  # a term that appears late
        hook.after_train_iter(runner, i, outputs=outputs)
    runner.epoch = 1
    hook.after_val_epoch(runner, {'coco/bbox_mAP_50': 0.25, 'other': 1.})
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)

    resumed = CurvePlotHook(smooth=2)
    resumed.after_load_checkpoint(runner, checkpoint)
    resumed.before_train(runner)
    runner.iter = 3
    resumed.after_train_iter(runner, 3, outputs=dict(loss=0.5, loss_cls=.5))
    resumed.after_train(runner)

    curves = json.loads((tmp_path / 'curves.json').read_text())
    assert curves['loss_iters'] == [1, 2, 3, 4]
    assert curves['losses']['loss'] == [3., 2., 1., .5]
    aux = curves['losses']['loss_aux']
    assert aux[2] == 0.1 and all(v != v for v in aux[:2] + aux[3:])  # NaN
    assert 'acc' not in curves['losses']
    evaluation, = curves['evals']
    assert evaluation['epoch'] == 1 and evaluation['coco/bbox_mAP_50'] == .25
    assert 'other' not in evaluation
    assert (tmp_path / 'curves.png').read_bytes().startswith(b'\x89PNG')
