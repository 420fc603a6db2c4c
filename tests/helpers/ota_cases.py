"""The official OTA / AuxOTA loss vectors (tests/data/*ota_*.pt): loading a
case, its dense predictions, our loss built for it, and its matches as
comparable rows."""
from collections import Counter

import torch

import mmyolo_ext  # noqa: F401  (registers the modules)
from mmyolo_ext.registry import MODELS

from helpers.paths import TEST_DATA

VECTOR_FILES = sorted(p.name for p in TEST_DATA.glob('*ota_*.pt'))
# the reference's hyp files (box, cls, obj before its scaling rules)
HYP_FILES = {
    'hyp.scratch.p5.yaml': (0.05, 0.3, 0.7),
    'hyp.scratch.p6.yaml': (0.05, 0.3, 0.7),
    'hyp.scratch.tiny.yaml': (0.05, 0.5, 1.0),
}
P5_ANCHORS = [[[12, 16], [19, 36], [40, 28]], [[36, 75], [76, 55], [72, 146]],
              [[142, 110], [192, 243], [459, 401]]]


def load_case(name):
    return torch.load(TEST_DATA / name, weights_only=True)


def dense(shape, obj, index, values):
    """Rebuild a dense head output from the vectors' sparse layout."""
    out = torch.zeros(shape)
    out[..., 4] = obj
    b, a, gj, gi = index.unbind(1)
    out[b, a, gj, gi] = values
    return out


def case_preds(case, key_obj='preds_obj', key_sparse='preds_sparse'):
    return [
        dense(s, o, i, v) for s, o, i, v in zip(
            case['pred_shapes'], case[key_obj], case['sparse_index'],
            case[key_sparse])
    ]


def build_loss(case, **kwargs):
    hyp = case['hyp']
    cfg = dict(
        type='ComputeLossOTA',
        box_gain=hyp['box'],
        obj_gain=hyp['obj'],
        cls_gain=hyp['cls'],
        scale_gains=False)
    cfg.update(kwargs)
    return MODELS.build(
        cfg,
        default_args=dict(
            num_classes=case['nc'],
            anchors=case['anchors_px'],
            strides=case['stride']))


def reference_rows(case, matches):
    """Per level a multiset of (image, anchor, gy, gx, target row)."""
    targets = case['targets']
    levels = []
    for level in range(len(matches['as'])):
        rows = []
        for b, a, gj, gi, target in zip(matches['matching_bs'][level],
                                        matches['as'][level],
                                        matches['gjs'][level],
                                        matches['gis'][level],
                                        matches['targets'][level]):
            # the vectors store the matched target row's values
            row = int(torch.nonzero((targets == target).all(1))[0, 0])
            rows.append((int(b), int(a), int(gj), int(gi), row))
        levels.append(Counter(rows))
    return levels


def our_rows(cells):
    return [
        Counter(
            zip(*(level[key].tolist()
                  for key in ('image', 'anchor', 'grid_y', 'grid_x',
                              'target')))) for level in cells
    ]


def run_case(case, input_hw, **kwargs):
    preds = [p.requires_grad_() for p in case_preds(case)]
    loss_module = build_loss(case, **kwargs)
    out = loss_module(
        preds, case['targets'], input_hw, return_assignment=True)
    total = out['loss_box'] + out['loss_obj'] + out['loss_cls']
    total.backward()
    return out, total, [p.grad for p in preds]
