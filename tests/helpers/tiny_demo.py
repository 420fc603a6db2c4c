"""The demo config shrunk for tests: yolov7-tiny on a few generated shapes
images, no validation, no checkpoints."""
import textwrap
from pathlib import Path

from mmengine.config import Config

from helpers.paths import ROOT
DEMO_CONFIG = ROOT / 'configs' / 'yolov7_tiny_demo.py'


def tiny_demo_config(tmp_path: Path,
                     images: int = 4,
                     batch: int = 2,
                     epochs: int = 1,
                     img_size: int = 128,
                     extra: str = '') -> Path:
    """Write the config file; ``extra`` is appended to it."""
    path = tmp_path / 'tiny_demo.py'
    path.write_text(textwrap.dedent(f"""
        _base_ = [{str(DEMO_CONFIG)!r}]
        data_root = {str(tmp_path / 'shapes') + '/'!r}
        train_dataloader = dict(
            batch_size={batch}, num_workers=0, persistent_workers=False,
            dataset=dict(
                data_root=data_root,
                generate=dict(num_train={images}, num_val=2,
                              img_size={img_size})))
        val_dataloader = None
        val_evaluator = None
        val_cfg = None
        train_cfg = dict(max_epochs={epochs}, val_interval={epochs + 1})
        default_hooks = dict(
            checkpoint=dict(interval=-1, save_last=False, save_best=None),
            logger=dict(interval=1),
            param_scheduler=dict(max_epochs={epochs}))
        randomness = dict(seed=0)
        """) + textwrap.dedent(extra))
    return path


def tiny_demo_cfg(tmp_path: Path, **kwargs) -> Config:
    cfg = Config.fromfile(str(tiny_demo_config(tmp_path, **kwargs)))
    cfg.work_dir = str(tmp_path / 'work')
    return cfg


def small_eval_config(tmp_path: Path) -> Path:
    """The demo config evaluating 4 generated validation images in rect
    batches of 2 (for tools/test.py on an exported model)."""
    cfg_path = tmp_path / 'small_demo.py'
    cfg_path.write_text(textwrap.dedent(f"""
        _base_ = [{str(DEMO_CONFIG)!r}]
        data_root = {str(tmp_path / 'shapes') + '/'!r}
        val_dataloader = dict(batch_size=2, dataset=dict(
            data_root=data_root, generate=dict(num_train=1, num_val=4),
            batch_shapes_cfg=dict(batch_size=2)))
        test_dataloader = val_dataloader
        val_evaluator = dict(ann_file=data_root +
                             'annotations/instances_val.json')
        test_evaluator = val_evaluator
        """))
    return cfg_path
