"""The embedded demo config, end to end on a few images: it generates its
data, trains, evaluates COCO mAP and writes the curves (PNG and JSON)."""
import json
from pathlib import Path

from mmengine.config import Config
from mmengine.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
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
