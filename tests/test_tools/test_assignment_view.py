"""The assignment view (tools/analysis_tools/visualize_assignment.py): on an image
with known boxes the listed and drawn positive cells are those of the YOLOv5
candidate rule re-derived here; a ground truth no anchor fits is listed as
without positives; OTA's choice lies within the candidates; the auxiliary
head (P6) gets the 5-cell rule."""
import json
import math
from collections import Counter
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmyolo_ext.analysis import assignment_view as view
from mmyolo_ext.registry import MODELS

from helpers.paths import ROOT
from helpers.tools import load_tool

SIZE = 128
TINY_ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45),
                                                 (59, 119)],
                [(116, 90), (156, 198), (373, 326)]]
# (cx, cy, w, h) in pixels: two ordinary boxes and a 100x2 one that no
# anchor fits within 4x on both sides
BOXES = [(44., 60., 24., 30.), (92., 92., 40., 20.), (64., 112., 100., 2.)]


def expected_cells(boxes, strides, anchors, size, bias, anchor_t=4.0):
    """The official candidate rule, written out: per (gt, level, anchor)
    with every side ratio < anchor_t, the centre cell plus each neighbour
    cell the centre is within ``bias`` of (x and y separately; 0.5: the
    nearer one, 1.0: both), kept only more than one cell from the border.
    Returns a Counter of (gt, level, anchor, gy, gx)."""
    out = Counter()
    for k, (cx, cy, w, h) in enumerate(boxes):
        for level, (stride, level_anchors) in enumerate(zip(strides,
                                                            anchors)):
            n = size // stride
            for a, (aw, ah) in enumerate(level_anchors):
                if max(w / aw, aw / w, h / ah, ah / h) >= anchor_t:
                    continue
                gx, gy = cx / stride, cy / stride
                cells = [(math.floor(gy), math.floor(gx))]
                if gx % 1 < bias and gx > 1:
                    cells.append((math.floor(gy), math.floor(gx - bias)))
                if (n - gx) % 1 < bias and n - gx > 1:
                    cells.append((math.floor(gy), math.floor(gx + bias)))
                if gy % 1 < bias and gy > 1:
                    cells.append((math.floor(gy - bias), math.floor(gx)))
                if (n - gy) % 1 < bias and n - gy > 1:
                    cells.append((math.floor(gy + bias), math.floor(gx)))
                for gyy, gxx in cells:
                    out[(k, level, a, gyy, gxx)] += 1
    return out


def listed_cells(levels):
    out = Counter()
    for level, cells in enumerate(levels):
        for t, a, gy, gx in zip(cells['target'].tolist(),
                                cells['anchor'].tolist(),
                                cells['grid_y'].tolist(),
                                cells['grid_x'].tolist()):
            out[(t, level, a, gy, gx)] += 1
    return out


def batch(boxes, size=SIZE, grey=128):
    """A yolov5_collate batch: one grey image with the boxes (class k % 2)."""
    rows = [[0, k % 2, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            for k, (cx, cy, w, h) in enumerate(boxes)]
    return dict(
        inputs=torch.full((1, 3, size, size), grey, dtype=torch.uint8),
        data_samples=dict(
            bboxes_labels=torch.tensor(rows, dtype=torch.float32)))


@pytest.fixture(scope='module')
def tiny_model():
    cfg = Config.fromfile(
        str(ROOT / 'configs' / '_base_' / 'models' / 'yolov7_tiny.py'))
    cfg.model.bbox_head.head_module.num_classes = 2
    init_default_scope('mmyolo')
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def test_candidate_rule_cells_listed_and_drawn(tiny_model):
    assignment, inputs = view.assign_batch(tiny_model, batch(BOXES),
                                           use_predictions=False)
    assert assignment.source == 'candidate rule'
    expected = expected_cells(BOXES, [8, 16, 32], TINY_ANCHORS, SIZE, 0.5)
    assert listed_cells(assignment.heads['lead']) == expected
    assert set(assignment.heads) == {'lead'}

    summary = view.image_summary(assignment, 0)
    for k, gt in enumerate(summary['ground_truths']):
        per_level = [sum(n for (t, lv, *_), n in expected.items()
                         if t == k and lv == level) for level in range(3)]
        assert gt['lead_positives_per_level'] == per_level
        assert gt['size_wh'] == [BOXES[k][2], BOXES[k][3]]
    assert sum(summary['ground_truths'][0]['lead_positives_per_level']) > 0
    assert summary['without_positives'] == {'lead': [2]}
    assert 'NO positive for gt [2]' in view.format_summary('x', summary)

    # drawn: every positive cell of one ground truth is filled with its
    # colour (blended), every other cell is not
    image = view.image_rgb(inputs, tiny_model.data_preprocessor, 0)
    assert (image == 128).all()
    for level, stride in enumerate([8, 16, 32]):
        panel = view.draw_level(image, assignment, 'lead', level, 0)
        base = float(np.uint8(128 * 0.6 + 255 * 0.4))
        owners = {}
        for (t, lv, _, gy, gx) in expected:
            if lv == level:
                owners.setdefault((gy, gx), set()).add(t)
        n = SIZE // stride
        for gy in range(n):
            for gx in range(n):
                if gy * stride < 16:  # the panel's caption
                    continue
                inner = panel[gy * stride + 1:(gy + 1) * stride,
                              gx * stride + 1:(gx + 1) * stride].reshape(
                                  -1, 3).astype(float)
                who = owners.get((gy, gx), set())
                if len(who) == 1:
                    colour = np.array(view.gt_colour(who.pop()))
                    blend = np.round(base * (1 - view.CELL_ALPHA) +
                                     colour * view.CELL_ALPHA)
                    share = (np.abs(inner - blend) <= 1).all(1).mean()
                    assert share > 0.5, (level, gy, gx, share)
                elif not who:
                    tinted = [(np.abs(inner - np.round(
                        base * (1 - view.CELL_ALPHA) +
                        np.array(view.gt_colour(k)) * view.CELL_ALPHA)) <=
                        1).all(1).mean() for k in range(3)]
                    assert max(tinted) < 0.2, (level, gy, gx)


def test_ota_choice_lies_within_the_candidates(tiny_model):
    """With predictions: the model's own OTA matching (dynamic k), a subset
    of the candidate cells; every fitting ground truth keeps >= 1."""
    data = batch(BOXES[:2])
    ota, _ = view.assign_batch(tiny_model, data, use_predictions=True)
    rule, _ = view.assign_batch(tiny_model, data, use_predictions=False)
    assert ota.source == 'predictions'
    chosen, candidates = listed_cells(ota.heads['lead']), listed_cells(
        rule.heads['lead'])
    assert not chosen - candidates and chosen != candidates
    counts = view.positives_per_target(ota.heads['lead'], 2)
    assert (counts.sum(1) >= 1).all()


def test_aux_head_gets_the_five_cell_rule():
    init_default_scope('mmyolo')
    anchors = [[(19, 27), (44, 40), (38, 94)], [(96, 68), (86, 152),
                                                (180, 137)],
               [(140, 301), (303, 264), (238, 542)],
               [(436, 615), (739, 380), (925, 792)]]
    strides = [8, 16, 32, 64]
    head = MODELS.build(
        dict(
            type='IDetectHead',
            head_module=dict(
                type='IDetectHeadModule',
                num_classes=2,
                in_channels=[8] * 4,
                aux_in_channels=[8] * 4,
                featmap_strides=strides),
            prior_generator=dict(
                type='mmdet.YOLOAnchorGenerator',
                base_sizes=anchors,
                strides=strides),
            loss=dict(type='ComputeLossOTA')))
    model = SimpleNamespace(
        bbox_head=head,
        data_preprocessor=MODELS.build(
            dict(type='YOLOv5DetDataPreprocessor', mean=[0., 0., 0.],
                 std=[255., 255., 255.], bgr_to_rgb=True)))
    boxes = [(60., 70., 40., 50.), (150., 100., 90., 60.)]
    assignment, _ = view.assign_batch(model, batch(boxes, size=256),
                                      use_predictions=False)
    assert set(assignment.heads) == {'lead', 'aux'}
    assert listed_cells(assignment.heads['lead']) == expected_cells(
        boxes, strides, anchors, 256, 0.5)
    assert listed_cells(assignment.heads['aux']) == expected_cells(
        boxes, strides, anchors, 256, 1.0)


GENERATE = dict(num_train=3, num_val=1, img_size=128, seed=1)


def test_tool_writes_pngs_and_summary(tmp_path):
    """The command line on the demo config (its train pipeline and
    collate), a few generated images."""
    from mmyolo_ext.demo_data import generate_shapes_dataset
    root = tmp_path / 'shapes'
    generate_shapes_dataset(str(root), **GENERATE)
    tool = load_tool('tools/analysis_tools/visualize_assignment.py')
    out = tmp_path / 'out'
    assert tool.main([
        str(ROOT / 'configs' / 'yolov7_tiny_demo.py'), '--num-images', '2',
        '--out-dir', str(out), '--cfg-options',
        # the demo's pipeline letterboxes to img_scale: the images' size here
        'img_scale=(128,128)',
        f'train_dataloader.dataset.data_root={root}/',
        *(f'train_dataloader.dataset.generate.{k}={v}'
          for k, v in GENERATE.items())
    ]) == 0
    pngs = sorted(out.glob('*.png'))
    assert len(pngs) == 2
    summary = json.loads((out / 'summary.json').read_text())
    assert sorted(summary) == [p.stem for p in pngs]
    coco = json.loads(
        (root / 'annotations' / 'instances_train.json').read_text())
    first = min(coco['images'], key=lambda im: im['id'])
    gts = [a for a in coco['annotations'] if a['image_id'] == first['id']]
    entry = summary[pngs[0].stem]
    assert len(entry['ground_truths']) == len(gts)
    assert entry['source'] == 'candidate rule'
    png = cv2.imread(str(pngs[0]))
    assert png.shape == (128, 3 * 128, 3)  # one row, three levels
