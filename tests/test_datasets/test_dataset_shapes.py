"""The synthetic shapes dataset: deterministic, as specified, safe when two
processes generate it at once, and loadable as an MMYOLO COCO dataset."""
import json
import multiprocessing
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from mmyolo_ext.demo_data import (SHAPE_CLASSES, SyntheticShapesDataset,
                                  generate_shapes_dataset)

SPEC = dict(num_train=24, num_val=6, img_size=160, seed=3)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data') / 'shapes'
    assert generate_shapes_dataset(str(root), **SPEC) is True
    return root


def load(root: Path, split: str) -> dict:
    return json.loads(
        (root / 'annotations' / f'instances_{split}.json').read_text())


def test_same_arguments_give_identical_files(shapes, tmp_path):
    again = tmp_path / 'again'
    generate_shapes_dataset(str(again), **SPEC)
    for path in sorted(shapes.rglob('*')):
        if path.is_file():
            twin = again / path.relative_to(shapes)
            assert twin.read_bytes() == path.read_bytes(), path.name
    other_seed = tmp_path / 'other'
    generate_shapes_dataset(str(other_seed), **dict(SPEC, seed=4))
    assert load(other_seed, 'train') != load(shapes, 'train')


def test_annotations_follow_the_specification(shapes):
    size = SPEC['img_size']
    # 12-120 px at 320 px, in proportion at other sizes
    least, largest = 12 * size / 320, 120 * size / 320
    for split, count in (('train', SPEC['num_train']), ('val',
                                                        SPEC['num_val'])):
        coco = load(shapes, split)
        assert [c['name'] for c in coco['categories']] == list(SHAPE_CLASSES)
        assert len(coco['images']) == count
        assert len({img['id'] for img in coco['images']}) == count
        per_image = {img['id']: [] for img in coco['images']}
        for ann in coco['annotations']:
            per_image[ann['image_id']].append(ann)
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
            assert least - 1 <= max(w, h) <= largest + 1, ann
            assert 0 < ann['area'] <= w * h + 1
            assert ann['iscrowd'] == 0
            assert (shapes / split / next(
                img['file_name'] for img in coco['images']
                if img['id'] == ann['image_id'])).is_file()
        assert all(1 <= len(anns) <= 8 for anns in per_image.values())
    train = load(shapes, 'train')
    labels = {ann['category_id'] for ann in train['annotations']}
    assert labels == {1, 2, 3}
    counts = [len(v) for v in _by_image(train).values()]
    assert max(counts) >= 5, 'crowded images occur'


def _by_image(coco: dict) -> dict:
    groups = {img['id']: [] for img in coco['images']}
    for ann in coco['annotations']:
        groups[ann['image_id']].append(ann['bbox'])
    return groups


def test_objects_may_overlap(shapes):
    overlapping = 0
    for boxes in _by_image(load(shapes, 'train')).values():
        for (x1, y1, w1, h1), (x2, y2, w2, h2) in combinations(boxes, 2):
            if min(x1 + w1, x2 + w2) > max(x1, x2) and min(
                    y1 + h1, y2 + h2) > max(y1, y2):
                overlapping += 1
    assert overlapping > 0


def test_images_are_textured_not_flat(shapes):
    import cv2
    img = cv2.imread(str(shapes / 'train' / '000000.jpg'))
    assert img.shape == (SPEC['img_size'], SPEC['img_size'], 3)
    # noise and texture: neighbouring pixels differ, colours vary widely
    assert np.abs(np.diff(img.astype(int), axis=1)).mean() > 2
    assert img.reshape(-1, 3).std(0).min() > 10


def _generate(root: str, results) -> None:
    results.put(generate_shapes_dataset(root, **SPEC))


def test_two_processes_at_once_leave_one_complete_dataset(shapes, tmp_path):
    root = tmp_path / 'shared'
    ctx = multiprocessing.get_context('fork')
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_generate, args=(str(root), results))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert sorted(results.get() for _ in workers) == [False, True]
    assert load(root, 'train') == load(shapes, 'train')
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.tmp')]


def test_existing_dataset_with_other_arguments_is_refused(shapes, tmp_path):
    with pytest.raises(ValueError, match="'num_train': 24"):
        generate_shapes_dataset(str(shapes), **dict(SPEC, num_train=25))
    (tmp_path / 'not_shapes').mkdir()
    with pytest.raises(FileNotFoundError, match='spec.json'):
        generate_shapes_dataset(str(tmp_path / 'not_shapes'))
    with pytest.raises(ValueError, match='img_size'):
        generate_shapes_dataset(str(tmp_path / 'new'), img_size=8)


def test_dataset_class_generates_and_loads(tmp_path):
    root = tmp_path / 'fresh'
    dataset = SyntheticShapesDataset(
        data_root=str(root),
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        generate=dict(SPEC, num_train=2, num_val=3),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='mmdet.LoadAnnotations', with_bbox=True)
        ])
    assert (root / 'spec.json').is_file()
    assert len(dataset) == 3
    assert dataset.metainfo['classes'] == SHAPE_CLASSES
    sample = dataset[0]
    assert sample['img'].shape == (160, 160, 3)
    coco = load(root, 'val')
    first = [a for a in coco['annotations'] if a['image_id'] == 1]
    assert len(sample['gt_bboxes']) == len(first)
    assert sorted(sample['gt_bboxes_labels'].tolist()) == sorted(
        a['category_id'] - 1 for a in first)


def test_dataset_class_needs_a_data_root():
    with pytest.raises(ValueError, match='data_root'):
        SyntheticShapesDataset(ann_file='x.json')
