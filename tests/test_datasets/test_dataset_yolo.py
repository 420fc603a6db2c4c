"""YOLODataset: the official YOLO layout read as the official code reads it
(sources, label lookup, rows, polygons, duplicates, background images, bad
labels, cache), and the same mAP as the same data in COCO json."""
import gc
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmdet.datasets.api_wrappers import COCOeval
from mmdet.evaluation import CocoMetric
from mmengine.logging import MMLogger

from mmyolo_ext.datasets import YOLODataset, img2label_path
from mmyolo_ext.demo_data import SyntheticShapesDataset, export_yolo_layout
from mmyolo_ext.datasets import yolo_labels
from mmyolo_ext.datasets.yolo_labels import LabelError

W, H = 40, 30  # image size of the hand-made datasets


def write_image(path: Path, w: int = W, h: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(len(str(path))).integers(
        0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def write_label(root: Path, rel_img: str, text: str) -> Path:
    path = Path(img2label_path(str(root / rel_img)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_yaml(path: Path, body: str) -> Path:
    path.write_text(body + '\nnc: 3\nnames: [a, b, c]\n')
    return path


def build(data_yaml, **kwargs) -> YOLODataset:
    return YOLODataset(data_yaml=str(data_yaml), **kwargs)


def paths(dataset) -> list:
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def test_label_lookup_rule():
    sep = os.sep
    img = f'{sep}d{sep}images{sep}site{sep}images{sep}a.b.jpg'
    # the last /images/ becomes /labels/, the extension .txt
    assert img2label_path(img) == (
        f'{sep}d{sep}images{sep}site{sep}labels{sep}a.b.txt')
    assert img2label_path(f'{sep}d{sep}x.png') == f'{sep}d{sep}x.txt'
    # the batch version (string methods, the rule once per folder) agrees
    # with the rule path by path, on the corner cases of the name and folder
    many = [img, f'{sep}d{sep}x.png', 'x.jpg', f'{sep}x.jpg',
            f'images{sep}a.jpg', f'{sep}d{sep}images{sep}.hidden.jpg',
            f'{sep}d{sep}images{sep}..jpg', f'{sep}d{sep}images{sep}.jpg',
            f'{sep}d.e{sep}images{sep}a.tar.gz.png',
            f'{sep}d{sep}images{sep}b.JPG', f'{sep}d{sep}images{sep}a.jpg']
    assert yolo_labels.img2label_paths(many) == [
        img2label_path(p) for p in many
    ]


def test_split_sources_folder_list_both_and_path_root(tmp_path):
    root = tmp_path / 'ds'
    for rel in ('images/train/a.jpg', 'images/train/sub/b.png',
                'images/extra/c.jpg', 'images/train/notes.md'):
        write_image(root / rel) if not rel.endswith('.md') else (
            root / rel).write_text('not an image, skipped by extension')
    (root / 'extra.txt').write_text('./images/extra/c.jpg\n'
                                    'images/train/a.jpg\n')
    train = {str(root / 'images/train/a.jpg'),
             str(root / 'images/train/sub/b.png')}
    listed = {str(root / 'images/extra/c.jpg'),
              str(root / 'images/train/a.jpg')}

    folder = write_yaml(root / 'folder.yaml', 'train: images/train')
    assert sorted(paths(build(folder))) == sorted(train)
    txt = write_yaml(root / 'txt.yaml', 'train: extra.txt')
    assert sorted(paths(build(txt))) == sorted(listed)
    both = write_yaml(root / 'both.yaml',
                      'train: [images/train, extra.txt]')
    # the official code concatenates the sources (a repeated file twice)
    assert sorted(paths(build(both))) == sorted([*train, *listed])
    # YOLOv5's path: root, with the data.yaml elsewhere
    (tmp_path / 'cfg').mkdir()
    rooted = write_yaml(tmp_path / 'cfg/data.yaml',
                        'path: ../ds\ntrain: images/train\nval: extra.txt')
    assert sorted(paths(build(rooted))) == sorted(train)
    assert sorted(paths(build(rooted, split='val'))) == sorted(listed)
    dataset = build(rooted)
    assert dataset.metainfo['classes'] == ('a', 'b', 'c')
    assert dataset.metainfo['num_classes'] == 3
    with pytest.raises(FileNotFoundError, match='nowhere'):
        build(write_yaml(root / 'bad.yaml', 'train: nowhere'))


def test_rows_polygons_duplicates_background(tmp_path):
    root = tmp_path / 'ds'
    for name in ('box', 'poly', 'dup', 'missing', 'empty'):
        write_image(root / f'images/train/{name}.jpg')
    write_label(root, 'images/train/box.jpg', '1 0.5 0.4 0.5 0.2\n')
    pts = [0.1, 0.2, 0.7, 0.1, 0.9, 0.8, 0.3, 0.6]
    write_label(root, 'images/train/poly.jpg',
                '2 ' + ' '.join(map(str, pts)) + '\n')
    dup = write_label(root, 'images/train/dup.jpg',
                      '0 0.5 0.5 0.2 0.2\n\n0 0.5 0.5 0.2 0.2\n'
                      '0 0.3 0.3 0.2 0.2\n')
    write_label(root, 'images/train/empty.jpg', '')
    dataset = build(write_yaml(root / 'data.yaml', 'train: images/train'))
    infos = {Path(d['img_path']).stem: d
             for d in map(dataset.get_data_info, range(len(dataset)))}
    assert set(infos) == {'box', 'poly', 'dup', 'missing', 'empty'}

    def boxes(name):
        return [(i['bbox_label'], *i['bbox'])
                for i in infos[name]['instances']]

    # cx cy w h normalized -> pixel corners
    (label, *box), = boxes('box')
    assert label == 1
    np.testing.assert_allclose(
        box, [(0.5 - 0.25) * W, (0.4 - 0.1) * H, (0.5 + 0.25) * W,
              (0.4 + 0.1) * H], atol=1e-4)
    # a polygon becomes the box of its points
    (label, *box), = boxes('poly')
    assert label == 2
    np.testing.assert_allclose(
        box, [min(pts[0::2]) * W, min(pts[1::2]) * H, max(pts[0::2]) * W,
              max(pts[1::2]) * H], atol=1e-4)
    # the exact duplicate (line 3 of line 1) dropped and reported
    assert len(boxes('dup')) == 2
    assert dataset.scan_bad_labels == [
        f'{dup}:3: duplicate of line 1, dropped'
    ]
    assert boxes('missing') == [] and boxes('empty') == []
    s = dataset.scan_summary
    assert (s['labels_found'], s['labels_missing'], s['labels_empty'],
            s['duplicates_dropped'], s['kept']) == (3, 1, 1, 1, 5)
    assert infos['box']['width'] == W and infos['box']['height'] == H

    single = build(root / 'data.yaml', single_cls=True)
    assert single.metainfo['classes'] == ('item', )
    labels = {i['bbox_label'] for d in map(single.get_data_info,
                                           range(len(single)))
              for i in d['instances']}
    assert labels == {0}


BAD_ROWS = {
    'class_too_large': ('3 0.5 0.5 0.1 0.1', 'class 3 is not an integer'),
    'class_negative': ('-1 0.5 0.5 0.1 0.1', 'class -1'),
    'too_few_values': ('0 0.5 0.5 0.1', '4 values'),
    'outside': ('0 1.2 0.5 0.1 0.1', 'coordinate 1.2 outside'),
    'nan': ('0 nan 0.5 0.1 0.1', 'NaN'),
    'zero_size': ('0 0.5 0.5 0 0.1', 'sizes must be > 0'),
    'negative_size': ('0 0.5 0.5 0.1 -0.1', 'sizes must be > 0'),
    'not_a_number': ('0 0.5 x 0.1 0.1', 'not a number'),
}


def test_each_bad_label_is_reported_with_file_and_line(tmp_path):
    root = tmp_path / 'ds'
    write_image(root / 'images/train/good.jpg')
    write_label(root, 'images/train/good.jpg', '0 0.5 0.5 0.2 0.2\n')
    files = {}
    for name, (row, _) in BAD_ROWS.items():
        write_image(root / f'images/train/{name}.jpg')
        # the bad row on line 2, after a good one
        files[name] = write_label(root, f'images/train/{name}.jpg',
                                  f'0 0.5 0.5 0.2 0.2\n{row}\n')
    # within the tolerance: kept, clipped to the image
    write_image(root / 'images/train/edge.jpg')
    write_label(root, 'images/train/edge.jpg', '0 0.9 0.5 0.2004 0.2\n')
    data_yaml = write_yaml(root / 'data.yaml', 'train: images/train')

    logger = MMLogger.get_current_instance()
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        dataset = build(data_yaml)
    finally:
        logger.removeHandler(handler)
    kept = sorted(Path(p).stem for p in paths(dataset))
    assert kept == ['edge', 'good']  # every image with a bad row skipped
    edge, = [dataset.get_data_info(i) for i in range(2)
             if 'edge' in dataset.get_data_info(i)['img_path']]
    assert edge['instances'][0]['bbox'][2] == pytest.approx(W, abs=1e-4)
    assert len(dataset.scan_bad_labels) == len(BAD_ROWS)
    for name, (row, reason) in BAD_ROWS.items():
        message, = [m for m in dataset.scan_bad_labels
                    if m.startswith(f'{files[name]}:2: ')]
        assert reason in message and row in message
        assert message in seen  # logged
    assert dataset.scan_summary['skipped_bad_label'] == len(BAD_ROWS)
    summary, = [m for m in seen if m.startswith('YOLODataset')]
    assert f'{len(BAD_ROWS)} skipped for bad labels' in summary

    with pytest.raises(LabelError, match=r'\.txt:2: '):
        build(data_yaml, strict=True, use_cache=False)


def test_cache_written_reused_and_invalidated(tmp_path, monkeypatch):
    root = tmp_path / 'ds'
    for i in range(3):
        write_image(root / f'images/train/{i}.jpg')
        label = write_label(root, f'images/train/{i}.jpg',
                            f'{i} 0.5 0.5 0.2 0.2\n')
    data_yaml = write_yaml(root / 'data.yaml', 'train: images/train')
    first = build(data_yaml)
    cache = Path(first.scan_summary['cache'])
    assert first.scan_summary['cache_state'] == 'written'
    assert cache == root / 'labels/train.cache.npz' and cache.is_file()
    with np.load(cache, allow_pickle=False) as arrays:  # nothing pickled
        assert arrays['labels'].shape == (3, 5)

    # unchanged files: the cache is read, no label file is parsed
    def no_parse(*args, **kwargs):
        raise AssertionError('parsed although the cache is valid')

    with monkeypatch.context() as m:
        m.setattr(yolo_labels, 'parse_label_file', no_parse)
        second = build(data_yaml)
    assert second.scan_summary['cache_state'] == 'loaded'
    assert [second.get_data_info(i) for i in range(3)] == [
        first.get_data_info(i) for i in range(3)
    ]
    # a changed label file rebuilds it
    label.write_text('1 0.5 0.5 0.4 0.4\n')
    os.utime(label, ns=(1, 1))  # a new mtime even on a coarse clock
    third = build(data_yaml)
    assert third.scan_summary['cache_state'] == 'written'
    assert third.get_data_info(2)['instances'][0]['bbox_label'] == 1


def _infos(dataset) -> list:
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def _rewrite_same_size_and_mtime(path: Path, text: str) -> None:
    """New content of the same size with the old mtime put back (as
    ``cp -p`` or an unpacked archive does): only st_ctime tells."""
    before = path.stat()
    assert len(text) == before.st_size
    for _ in range(1000):  # until the kernel's coarse clock has ticked
        path.write_text(text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        if path.stat().st_ctime_ns != before.st_ctime_ns:
            return
        time.sleep(0.002)
    raise AssertionError('st_ctime did not change')


def _change_label_in_place(root):
    _rewrite_same_size_and_mtime(
        Path(img2label_path(str(root / 'images/train/1.jpg'))),
        '2 0.5 0.5 0.2 0.2\n')  # class 1 -> 2, same size and mtime


def _replace_image(root):
    write_image(root / 'images/train/1.jpg', W + 8, H)


def _add_image(root):
    write_image(root / 'images/train/3.jpg')


def _remove_image(root):
    (root / 'images/train/0.jpg').unlink()


def _add_label(root):  # the background image gets a label file
    write_label(root, 'images/train/2.jpg', '0 0.5 0.5 0.4 0.4\n')


def _remove_label(root):
    Path(img2label_path(str(root / 'images/train/1.jpg'))).unlink()


def _add_other_files(root):
    (root / 'images/train/notes.md').write_text('not an image')
    write_label(root, 'images/train/orphan.jpg', '0 0.5 0.5 0.2 0.2\n')


def _read_every_file(root):
    for path in root.rglob('*'):
        if path.is_file() and not path.name.endswith('.npz'):
            path.read_bytes()


@pytest.mark.parametrize('change, rebuilt', [
    (_change_label_in_place, True),
    (_replace_image, True),
    (_add_image, True),
    (_remove_image, True),
    (_add_label, True),
    (_remove_label, True),
    (_add_other_files, False),  # outside the listing
    (_read_every_file, False),
])
def test_cache_fingerprint_rules(tmp_path, monkeypatch, change, rebuilt):
    """Each change of an image or label file of the listing rebuilds the
    cache; files outside the listing and reads do not. Either way the infos
    are those of a scan without the cache."""
    root = tmp_path / 'ds'
    for i in range(3):
        write_image(root / f'images/train/{i}.jpg')
    for i in range(2):  # 2.jpg: a background image, no label file
        write_label(root, f'images/train/{i}.jpg', f'{i} 0.5 0.5 0.2 0.2\n')
    data_yaml = write_yaml(root / 'data.yaml', 'train: images/train')
    assert build(data_yaml).scan_summary['cache_state'] == 'written'
    change(root)
    with monkeypatch.context() as m:
        if not rebuilt:
            m.setattr(yolo_labels, 'parse_label_file', None)  # not called
        dataset = build(data_yaml)
    assert dataset.scan_summary['cache_state'] == (
        'written' if rebuilt else 'loaded')
    assert _infos(dataset) == _infos(build(data_yaml, use_cache=False))


def test_cache_follows_the_parse_settings(tmp_path):
    root = tmp_path / 'ds'
    write_image(root / 'images/train/a.jpg')
    write_label(root, 'images/train/a.jpg', '0 1.003 0.5 0.1 0.1\n')
    data_yaml = write_yaml(root / 'data.yaml', 'train: images/train')
    assert len(build(data_yaml)) == 1  # within the default tolerance
    strict = build(data_yaml, tolerance=0.001)
    assert strict.scan_summary['cache_state'] == 'written'
    assert len(strict) == 0 and 'outside' in strict.scan_bad_labels[0]
    assert build(data_yaml, tolerance=0.001).scan_summary[
        'cache_state'] == 'loaded'


def test_serialized_infos_and_paused_gc(tmp_path):
    """The one-buffer serialization gives mmengine's infos (those of the
    unserialized dataset), subsets included; the collector's state is put
    back after loading."""
    root = tmp_path / 'ds'
    for i in range(5):
        write_image(root / f'images/train/{i}.jpg')
        write_label(root, f'images/train/{i}.jpg',
                    '0 0.5 0.5 0.2 0.2\n' * (i % 3) + '1 0.3 0.3 0.1 0.1\n')
    data_yaml = write_yaml(root / 'data.yaml', 'train: images/train')
    assert gc.isenabled()
    serialized = build(data_yaml)
    assert gc.isenabled()
    plain = build(data_yaml, serialize_data=False)
    assert serialized.data_bytes.dtype == np.uint8
    assert _infos(serialized) == _infos(plain)
    subset = serialized.get_subset([3, 1])
    assert [d['img_path'] for d in _infos(subset)] == [
        plain.get_data_info(i)['img_path'] for i in (3, 1)
    ]
    assert [d['instances'] for d in _infos(subset)] == [
        plain.get_data_info(i)['instances'] for i in (3, 1)
    ]
    gc.disable()
    try:
        build(data_yaml)
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()


def test_mosaic_training_pipeline(tmp_path):
    root = tmp_path / 'ds'
    for i in range(4):
        write_image(root / f'images/train/{i}.jpg', 64, 48)
        write_label(root, f'images/train/{i}.jpg', '0 0.5 0.5 0.5 0.5\n')
    load = [
        dict(type='mmyolo_ext.TolerantLoadImageFromFile'),
        dict(type='mmdet.LoadAnnotations', with_bbox=True)
    ]
    dataset = build(
        write_yaml(root / 'data.yaml', 'train: images/train'),
        pipeline=[
            *load,
            dict(type='mmyolo.Mosaic', img_scale=(64, 64),
                 pre_transform=load),
        ])
    sample = dataset[0]
    assert sample['img'].shape == (128, 128, 3)
    assert 1 <= len(sample['gt_bboxes']) <= 4


def test_same_map_as_the_coco_json(tmp_path):
    """The shapes data in both formats, the same detections: CocoMetric on
    the COCO json and CocoMetric without a json (ground truths from
    YOLODataset) give the same mAP."""
    spec = dict(num_train=1, num_val=6, img_size=96, seed=5)
    coco_root = tmp_path / 'shapes'
    coco_ds = SyntheticShapesDataset(
        data_root=str(coco_root),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        generate=spec,
        test_mode=True,
        pipeline=[])
    data_yaml = export_yolo_layout(str(coco_root), str(tmp_path / 'yolo'))
    size = spec['img_size']
    test_pipeline = [
        dict(type='mmyolo_ext.TolerantLoadImageFromFile', on_bad='blank'),
        dict(type='mmyolo.YOLOv5KeepRatioResize', scale=(size, size)),
        dict(type='mmyolo.LetterResize', scale=(size, size),
             allow_scale_up=False, pad_val=dict(img=114)),
        dict(type='mmdet.LoadAnnotations', with_bbox=True),
        dict(type='mmdet.PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor', 'pad_param', 'instances'))
    ]
    yolo_ds = YOLODataset(
        data_yaml=data_yaml,
        split='val',
        test_mode=True,
        pipeline=test_pipeline,
        batch_shapes_cfg=dict(type='mmyolo.BatchShapePolicy', batch_size=2,
                              img_size=size, size_divisor=32,
                              extra_pad_ratio=0.5))
    assert len(yolo_ds) == len(coco_ds) == spec['num_val']

    # fixed detections per file: the ground truths jittered, some relabelled,
    # plus a false positive, with random scores
    rng = np.random.default_rng(0)
    detections = {}
    for i in range(len(coco_ds)):
        info = coco_ds.get_data_info(i)
        boxes, labels = [], []
        for inst in info['instances']:
            x1, y1, x2, y2 = inst['bbox']
            w, h = x2 - x1, y2 - y1
            boxes.append([x1 + rng.normal(0, .08) * w,
                          y1 + rng.normal(0, .08) * h,
                          x2 + rng.normal(0, .08) * w,
                          y2 + rng.normal(0, .08) * h])
            labels.append(inst['bbox_label'] if rng.random() > .2 else
                          int(rng.integers(3)))
        boxes.append([10, 10, 40, 50])
        labels.append(int(rng.integers(3)))
        detections[Path(info['img_path']).name] = dict(
            bboxes=torch.tensor(boxes, dtype=torch.float32),
            labels=torch.tensor(labels),
            scores=torch.tensor(rng.random(len(labels)), dtype=torch.float32))

    def evaluate(metric, dataset, samples):
        metric.dataset_meta = dataset.metainfo
        metric.process({}, samples)
        metric.preds = [pred for _, pred in metric.results]  # evaluate
        return metric.evaluate(size=len(samples))  # empties results

    ref_metric = CocoMetric(
        ann_file=str(coco_root / 'annotations/instances_val.json'),
        metric='bbox', proposal_nums=(1, 10, 100))
    reference = evaluate(ref_metric, coco_ds,
        [dict(img_id=info['img_id'], ori_shape=(info['height'],
                                               info['width']),
              pred_instances=detections[Path(info['img_path']).name])
         for info in map(coco_ds.get_data_info, range(len(coco_ds)))])
    samples = []
    for i in range(len(yolo_ds)):  # through the real test pipeline
        meta = yolo_ds[i]['data_samples'].metainfo
        samples.append(dict(
            img_id=meta['img_id'], ori_shape=meta['ori_shape'],
            instances=meta['instances'],
            pred_instances=detections[Path(meta['img_path']).name]))
    ours_metric = CocoMetric(ann_file=None, metric='bbox',
                             proposal_nums=(1, 10, 100))
    ours = evaluate(ours_metric, yolo_ds, samples)
    assert 0.2 < reference['coco/bbox_mAP_50'] < 0.95  # a real test
    # mAP_s/m/l differ by design: COCO's area is the shape's pixel count,
    # the YOLO format has only boxes (area = w * h)
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75'):
        assert ours[f'coco/{key}'] == reference[f'coco/{key}'], key
    # CocoMetric rounds to 3 decimals: the full-precision COCOeval stats of
    # the two ground-truth sets the metrics built (AP, AP50, AP75, AR@100)
    assert full_stats(ours_metric) == pytest.approx(
        full_stats(ref_metric), abs=1e-12)


def full_stats(metric) -> list:
    coco_gt = metric._coco_api
    dets = []
    for result in metric.preds:
        for box, score, label in zip(result['bboxes'], result['scores'],
                                     result['labels']):
            x1, y1, x2, y2 = (float(v) for v in box)
            dets.append(dict(image_id=result['img_id'],
                             bbox=[x1, y1, x2 - x1, y2 - y1],
                             score=float(score),
                             category_id=metric.cat_ids[int(label)]))
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dets), 'bbox')
    coco_eval.params.imgIds = metric.img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return [coco_eval.stats[k] for k in (0, 1, 2, 8)]
