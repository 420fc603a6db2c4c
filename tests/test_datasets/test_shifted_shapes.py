"""The shifted shapes set: its validation split is drawn unlike its training
split (backgrounds, colours, sizes, counts), checked on the written files,
and its YOLO layout holds the boxes of its COCO json."""
import json

import cv2
import numpy as np
import pytest
import yaml

from mmyolo_ext.demo_data.shifted_shapes import (CLASS_NAME, SPLIT_STYLES,
                                                generate_shifted_shapes)


@pytest.fixture(scope='module')
def shifted(tmp_path_factory):
    root = tmp_path_factory.mktemp('shifted') / 'data'
    data_yaml = generate_shifted_shapes(str(root))
    coco = {}
    for split in ('train', 'val'):
        with open(root / 'annotations' / f'instances_{split}.json') as f:
            coco[split] = json.load(f)
    return root, data_yaml, coco


def _per_image(coco):
    boxes = {im['id']: [] for im in coco['images']}
    for ann in coco['annotations']:
        boxes[ann['image_id']].append(ann['bbox'])
    return boxes


def test_sizes_and_counts_differ_between_splits(shifted):
    _, _, coco = shifted
    stats = {}
    for split, (num_images, style) in SPLIT_STYLES.items():
        per_image = _per_image(coco[split])
        assert len(per_image) == num_images
        counts = np.array([len(b) for b in per_image.values()])
        # an object that found no room is left out, never one too many
        assert counts.max() <= style['num_objects'][1]
        extents = np.array([max(w, h) for b in per_image.values()
                            for _, _, w, h in b])
        low, high = style['extent_range']
        # the drawn pixels' box: the extent, widened ~1 px by anti-aliasing
        assert extents.min() >= low - 1 and extents.max() <= high + 2
        stats[split] = counts, extents
    train_counts, train_extents = stats['train']
    val_counts, val_extents = stats['val']
    assert val_counts.mean() > train_counts.mean() + 3
    # objects smaller and larger than any the model was trained on
    assert (val_extents < train_extents.min()).sum() >= 10
    assert (val_extents > train_extents.max()).sum() >= 50
    assert {a['category_id'] for s in coco.values()
            for a in s['annotations']} == {1}


def test_backgrounds_and_colours_differ_between_splits(shifted):
    root, _, coco = shifted
    green_minus_blue, detail = {}, {}
    for split in ('train', 'val'):
        gb, lap = [], []
        for im in coco[split]['images']:
            img = cv2.imread(str(root / split / im['file_name']))
            img = img.astype(np.float32)
            gb.append((img[..., 1] - img[..., 0]).mean())
            grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            # texture after the noise is smoothed away: stripes, patches
            lap.append(cv2.Laplacian(cv2.GaussianBlur(grey, (5, 5), 0),
                                     cv2.CV_32F).var())
        green_minus_blue[split], detail[split] = np.array(gb), np.array(lap)
    # val ground is green/brown (G > B); train colour fields have no bias
    assert green_minus_blue['val'].mean() > 20
    assert abs(green_minus_blue['train'].mean()) < 15
    assert np.median(detail['val']) > 2 * np.median(detail['train'])


def test_yolo_layout_holds_the_coco_boxes(shifted):
    root, data_yaml, coco = shifted
    with open(data_yaml) as f:
        meta = yaml.safe_load(f)
    assert meta['nc'] == 1 and meta['names'] == [CLASS_NAME]
    for split in ('train', 'val'):
        sizes = {im['id']: (im['width'], im['height'], im['file_name'])
                 for im in coco[split]['images']}
        for image_id, boxes in _per_image(coco[split]).items():
            width, height, file_name = sizes[image_id]
            label = (root / 'yolo' / 'labels' / split /
                     file_name.replace('.jpg', '.txt'))
            rows = np.loadtxt(label, ndmin=2).reshape(-1, 5)
            assert (rows[:, 0] == 0).all()
            cx, cy, w, h = rows[:, 1:].T
            got = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                            w * width, h * height], 1)
            np.testing.assert_allclose(
                got, np.array(boxes, float).reshape(-1, 4), atol=1e-6)
