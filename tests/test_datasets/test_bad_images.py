"""Bad images (truncated JPEG, zero-byte file, missing file, non-image file)
in a COCO-json dataset and in a YOLODataset: reported by path, skipped
(training) or replaced by a grey image (validation), counted; and
tools/analysis_tools/check_data.py lists them with the bad annotations."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from mmyolo_ext.datasets import (BadImageLog, TolerantLoadImageFromFile,
                                 YOLODataset)
from mmyolo_ext.datasets.data_check import check_config
from mmyolo_ext.engine import BadImageReportHook

from helpers.paths import ROOT
from helpers.tools import load_tool
W, H = 48, 32
REASONS = {
    'truncated.jpg': 'truncated JPEG',
    'zero.jpg': 'empty file (0 bytes)',
    'missing.jpg': 'missing file',
    'text.jpg': 'not decodable as an image',
}


def jpeg_bytes(seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (H, W, 3), np.uint8)
    ok, buf = cv2.imencode('.jpg', img)
    assert ok
    return buf.tobytes()


def write_images(folder: Path, num_good: int = 4) -> list:
    """``num_good`` good JPEGs and the four bad kinds (missing.jpg is not
    written); returns every file name."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f'good{i}.jpg' for i in range(num_good)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(jpeg_bytes(i))
    whole = jpeg_bytes(99)
    (folder / 'truncated.jpg').write_bytes(whole[:len(whole) // 2])
    (folder / 'zero.jpg').write_bytes(b'')
    (folder / 'text.jpg').write_text('this is a text file, not a JPEG\n')
    return names + list(REASONS)


def write_coco(tmp_path: Path, bad_box: bool = False) -> Path:
    names = write_images(tmp_path / 'img')
    images = [dict(id=i + 1, file_name=n, width=W, height=H)
              for i, n in enumerate(names)]
    anns = [dict(id=i + 1, image_id=i + 1, category_id=1,
                 bbox=[4, 4, 20, 16], area=320, iscrowd=0)
            for i in range(len(names))]
    if bad_box:
        anns.append(dict(id=99, image_id=1, category_id=1,
                         bbox=[5, 5, 0.5, 10], area=5, iscrowd=0))
    ann_file = tmp_path / 'ann.json'
    ann_file.write_text(json.dumps(dict(
        images=images, annotations=anns,
        categories=[dict(id=1, name='thing')])))
    return ann_file


LOAD = [dict(type='mmyolo_ext.TolerantLoadImageFromFile'),
        dict(type='mmdet.LoadAnnotations', with_bbox=True)]
PACK = dict(type='mmdet.PackDetInputs',
            meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape'))


def coco_dataset(tmp_path: Path, pipeline, test_mode=False) -> dict:
    return dict(
        type='mmyolo.YOLOv5CocoDataset',
        data_root=str(tmp_path),
        ann_file='ann.json',
        data_prefix=dict(img='img/'),
        metainfo=dict(classes=('thing', )),
        filter_cfg=dict(filter_empty_gt=False),
        test_mode=test_mode,
        pipeline=pipeline)


def run_epoch(dataset_cfg, hook: BadImageReportHook, epoch: int):
    """One epoch through a real dataloader with a worker process; the
    hook's per-epoch count after it."""
    loader = Runner.build_dataloader(dict(
        batch_size=2, num_workers=1,
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='pseudo_collate'), dataset=dataset_cfg))
    seen = []
    for batch in loader:
        seen += [s.img_path for s in batch['data_samples']]
    runner = SimpleNamespace(epoch=epoch, logger=SimpleNamespace(
        warning=hook_messages.append, info=hook_messages.append))
    hook.after_train_epoch(runner)
    return seen, runner


hook_messages: list = []


def test_coco_dataset_training_skips_and_counts(tmp_path):
    write_coco(tmp_path)
    bad = {str(tmp_path / 'img' / n): r for n, r in REASONS.items()}
    hook = BadImageReportHook()
    hook.before_run(None)  # a fresh record before the workers start
    # mosaic draws 3 partners per sample through the tolerant loader too
    pipeline = [*LOAD, dict(type='mmyolo.Mosaic', img_scale=(64, 64),
                            pre_transform=LOAD), PACK]
    for epoch in range(2):
        seen, _ = run_epoch(coco_dataset(tmp_path, pipeline), hook, epoch)
        assert len(seen) == 8  # every index gave a sample
        assert not set(seen) & set(bad)  # others took the bad ones' place
        count = hook.epoch_counts[-1]
        # each bad index failed at least once; partners may fail too
        assert count['images'] == 4 and count['loads'] >= 4
    assert hook.bad_images.keys() == bad.keys()
    for path, reason in hook.bad_images.items():
        assert bad[path] in reason
    assert any('train epoch 2: ' in m and str(tmp_path) in m
               for m in hook_messages)


def test_coco_dataset_validation_keeps_every_sample(tmp_path):
    write_coco(tmp_path)
    hook = BadImageReportHook()
    hook.before_run(None)
    pipeline = [dict(LOAD[0], on_bad='blank'), LOAD[1], PACK]
    for epoch in range(2):
        seen, _ = run_epoch(coco_dataset(tmp_path, pipeline, True), hook,
                            epoch)
        assert len(seen) == 8 == len(set(seen))  # each image exactly once
        assert hook.epoch_counts[-1] == dict(
            stage='train', epoch=epoch + 1, loads=4, images=4)  # exact


def test_yolo_dataset_bad_images(tmp_path):
    root = tmp_path / 'ds'
    names = write_images(root / 'images/train')
    for name in names:
        label = root / 'labels/train' / name.replace('.jpg', '.txt')
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text('0 0.5 0.5 0.4 0.4\n')
    # a list names the missing file too
    (root / 'train.txt').write_text(
        ''.join(f'./images/train/{n}\n' for n in names))
    (root / 'data.yaml').write_text('train: train.txt\nnc: 1\n'
                                    'names: [thing]\n')
    dataset = YOLODataset(
        data_yaml=str(root / 'data.yaml'), pipeline=[*LOAD, PACK])
    # the scan finds the four at start, skips them, and says why
    assert len(dataset) == 4
    assert dataset.scan_summary['skipped_bad_image'] == 4
    for name, reason in REASONS.items():
        message, = [m for m in dataset.scan_bad_images
                    if m.startswith(str(root / 'images/train' / name))]
        assert reason.split(' (')[0] in message
    # files that go bad after the scan: the loader skips them
    good = root / 'images/train'
    (good / 'good0.jpg').unlink()
    (good / 'good1.jpg').write_bytes(jpeg_bytes(1)[:100])
    hook = BadImageReportHook()
    hook.before_run(None)
    seen, _ = run_epoch(dataset, hook, 0)  # the dataset scanned before
    assert len(seen) == 4 and set(seen) <= {str(good / 'good2.jpg'),
                                            str(good / 'good3.jpg')}
    assert set(hook.bad_images) == {str(good / 'good0.jpg'),
                                    str(good / 'good1.jpg')}
    assert hook.bad_images[str(good / 'good0.jpg')] == 'missing file'
    assert 'truncated JPEG' in hook.bad_images[str(good / 'good1.jpg')]


def test_each_bad_path_is_logged_once():
    log = BadImageLog.start_new()
    assert log.record('/x/a.jpg', 'missing file') is True
    assert log.record('/x/a.jpg', 'missing file') is False
    assert log.record('/x/b.jpg', 'missing file') is True
    events, offset = log.read()
    assert events == [('/x/a.jpg', 'missing file')] * 2 + [
        ('/x/b.jpg', 'missing file')]
    assert log.read(offset) == ([], offset)


def test_blank_needs_the_recorded_size(tmp_path):
    loader = TolerantLoadImageFromFile(on_bad='blank')
    out = loader(dict(img_path=str(tmp_path / 'gone.jpg'), height=7,
                      width=9))
    assert out['img'].shape == (7, 9, 3) and (out['img'] == 114).all()
    assert out['bad_image'] == 'missing file'
    with pytest.raises(ValueError, match='gone.jpg: missing file'):
        loader(dict(img_path=str(tmp_path / 'gone.jpg')))


def test_check_data_lists_bad_images_and_annotations(tmp_path, capsys,
                                                      monkeypatch):
    write_coco(tmp_path, bad_box=True)
    cfg = dict(train_dataloader=dict(dataset=coco_dataset(tmp_path, [])),
               val_dataloader=dict(dataset=coco_dataset(tmp_path, [], True)))
    reports = check_config(Config(cfg))
    assert [r['name'] for r in reports] == [
        'train_dataloader (YOLOv5CocoDataset)',
        'val_dataloader (YOLOv5CocoDataset)'
    ]
    for report in reports:
        assert report['images'] == 8
        assert sorted(Path(m.split(': ')[0]).name
                      for m in report['bad_images']) == sorted(REASONS)
        for m in report['bad_images']:
            assert REASONS[Path(m.split(': ')[0]).name] in m
        box, = report['bad_annotations']
        assert 'annotation id 99 (image good0.jpg)' in box
        assert 'under 1 px' in box

    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(f'train_dataloader = {cfg["train_dataloader"]!r}\n')
    tool = load_tool('tools/analysis_tools/check_data.py')
    monkeypatch.setattr(sys, 'argv', ['check_data.py', str(cfg_file)])
    assert tool.main() == 1
    out = capsys.readouterr().out
    for name in REASONS:
        assert f'bad image: {tmp_path / "img" / name}' in out
    assert 'summary: 5 problems in 1 datasets' in out


def test_recipes_load_images_tolerantly():
    cfg = Config.fromfile(str(ROOT / 'configs/yolov7_tiny_demo.py'))
    # the recipes' train pipeline loads its images itself (see below)
    assert cfg.train_dataloader.dataset.pipeline[0].type == (
        'YOLOv7MosaicPerspective')
    test_load = cfg.val_dataloader.dataset.pipeline[0]
    assert (test_load.type, test_load.on_bad) == ('TolerantLoadImageFromFile',
                                                  'blank')
    assert any(h.type == 'BadImageReportHook' for h in cfg.custom_hooks)
    p5 = Config.fromfile(str(ROOT / 'configs/yolov7_l_coco.py'))
    assert p5.train_dataloader.dataset.pipeline[0].type == (
        'YOLOv7MosaicPerspective')


def test_fused_mosaic_reports_and_replaces_a_bad_image(tmp_path):
    """YOLOv7MosaicPerspective reads its images itself: a bad first image is
    reported once (path and reason) and a good one takes its place, with
    that image's boxes."""
    import random

    from helpers.pipeline_data import ListDataset, make_images
    from mmyolo_ext.datasets.transforms import YOLOv7MosaicPerspective
    infos, _, _ = make_images(str(tmp_path), [(96, 80)] * 4, seed=0)
    broken = infos[0]['img_path']
    with open(broken, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + b'\0' * 50)
    log = BadImageLog.start_new()
    ds = ListDataset(infos)
    t = YOLOv7MosaicPerspective(img_scale=(96, 96), mosaic=0.0)
    random.seed(0)
    out = t(dict(ds.get_data_info(0), dataset=ds))
    assert out['img_path'] != broken and out['img'].shape == (96, 96, 3)
    n_boxes = len([i for i in ds.infos if i['img_path'] ==
                   out['img_path']][0]['instances'])
    assert 0 < len(out['gt_bboxes']) <= n_boxes
    entries, _ = log.read()
    assert [path for path, _ in entries] == [broken]


def test_a_real_run_reports_per_epoch_and_at_the_end(tmp_path):
    """mmengine's Runner with the hook from the config: two epochs over the
    COCO dataset with its four bad images, a log line per epoch and the
    summary at the end."""
    import torch
    from mmengine.model import BaseModel

    class Tiny(BaseModel):

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, inputs, data_samples=None, mode='loss'):
            return dict(loss=self.w.sum() * len(inputs))

    write_coco(tmp_path)
    runner = Runner(
        model=Tiny(),
        work_dir=str(tmp_path / 'work'),
        train_dataloader=dict(
            batch_size=2, num_workers=1,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='pseudo_collate'),
            dataset=coco_dataset(tmp_path, [*LOAD, PACK])),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[dict(type='mmyolo_ext.BadImageReportHook')])
    runner.train()
    hook, = [h for h in runner.hooks if isinstance(h, BadImageReportHook)]
    assert [(c['epoch'], c['images']) for c in hook.epoch_counts] == [
        (1, 4), (2, 4)]
    log = next((tmp_path / 'work').rglob('*.log')).read_text()
    for epoch in (1, 2):
        assert f'train epoch {epoch}: ' in log
    assert 'bad images: 4 files could not be loaded' in log
    for name in REASONS:
        assert str(tmp_path / 'img' / name) in log
