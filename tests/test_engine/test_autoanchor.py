"""Autoanchor (the official check_anchors): BPR re-derived by brute force,
refit on poorly covered labels, kept on covered ones, switch off, and the
new anchors reaching the priors, the loss, the EMA model and checkpoints."""
import copy
import logging
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from mmyolo_ext.engine.hooks import AutoAnchorHook
from mmyolo_ext.models.task_modules.anchor_fitting import (
    kmeans_codebook, ratio_metric)
from mmyolo_ext.registry import HOOKS, MODELS

from helpers.paths import ROOT

TINY_ANCHORS = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45],
                                                 [59, 119]],
                [[116, 90], [156, 198], [373, 326]]]
IMG_SIZE = 320


def brute_force_bpr(wh, anchors, anchor_t=4.0):
    """Fraction of labels that some anchor matches: every side ratio (both
    ways) below anchor_t, i.e. min(r, 1/r) > 1/anchor_t (official)."""
    hits = 0
    for w, h in wh:
        for aw, ah in anchors:
            if (w > 0 and h > 0 and max(w / aw, aw / w) < anchor_t
                    and max(h / ah, ah / h) < anchor_t):
                hits += 1
                break
    return hits / len(wh)


class LabelDataset:
    """get_data_info-only dataset: images of (width, height) with x1y1x2y2
    pixel boxes."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def get_data_info(self, index):
        (width, height), boxes = self.images[index]
        return dict(
            img_path=f'img{index}.jpg',
            width=width,
            height=height,
            instances=[dict(bbox=list(b), ignore_flag=0) for b in boxes])


def make_images(sizes_fn, num_images=40, per_image=6, seed=0,
                shape=(640, 480)):
    """Images of ``shape`` (long side 640: labels are halved at 320)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        boxes = []
        for _ in range(per_image):
            w, h = sizes_fn(rng)
            x, y = rng.uniform(0, 100, 2)
            boxes.append((x, y, x + w, y + h))
        images.append((shape, boxes))
    return images


def train_sizes(images):
    """Label sizes at IMG_SIZE (image long side scaled to it)."""
    out = []
    for (w, h), boxes in images:
        s = IMG_SIZE / max(w, h)
        out += [((x2 - x1) * s, (y2 - y1) * s) for x1, y1, x2, y2 in boxes]
    return out


@pytest.fixture(scope='module')
def tiny_cfg():
    cfg = Config.fromfile(
        str(ROOT / 'configs' / '_base_' / 'models' / 'yolov7_tiny.py'))
    cfg.model.bbox_head.head_module.num_classes = 2
    cfg.model.backbone.arch = 'tiny'
    return cfg


def build(cfg):
    init_default_scope('mmyolo')
    return MODELS.build(copy.deepcopy(cfg.model))


def fake_runner(model, dataset, ema_model=None, resume=False):
    hooks = [SimpleNamespace(ema_model=ema_model)] if ema_model else []
    return SimpleNamespace(
        model=model,
        train_dataloader=SimpleNamespace(dataset=dataset),
        logger=logging.getLogger('autoanchor-test'),
        hooks=hooks,
        message_hub=MessageHub.get_instance('autoanchor-test'),
        _resume=resume)


def head_anchor_views(head):
    """The head's anchors, in pixels: its one buffer and what the priors
    (the boxes prediction decodes around) are built from it."""
    priors = head.grid_priors([(1, 1)] * head.num_levels, torch.float32,
                              torch.device('cpu'))
    return dict(
        buffer=head.anchor_sizes.tolist(),
        attribute=head.anchors,
        priors=[(level[:, 2:] - level[:, :2]).tolist() for level in priors])


def assert_anchors(head, expected):
    for where, anchors in head_anchor_views(head).items():
        np.testing.assert_allclose(anchors, expected, rtol=1e-5,
                                   err_msg=where)


def grid_anchors(head):
    strides = torch.tensor(head.featmap_strides, dtype=torch.float32)
    return head.anchor_sizes / strides.view(-1, 1, 1)


def elongated(rng):
    # 25:1 boxes: no default anchor is within 4x on both sides
    w = rng.uniform(400, 600)
    return w, w / 25


def test_poorly_covered_labels_get_new_anchors(tiny_cfg, tmp_path):
    images = make_images(elongated)
    sizes = train_sizes(images)
    assert brute_force_bpr(sizes, sum(TINY_ANCHORS, [])) < 0.1
    model = build(tiny_cfg)
    head = model.bbox_head
    ema = copy.deepcopy(model)
    hook = HOOKS.build(dict(type='AutoAnchorHook', img_size=IMG_SIZE))
    hook.before_train(fake_runner(model, LabelDataset(images),
                                  SimpleNamespace(module=ema)))

    result = hook.result
    assert result.replaced and result.bpr_before < 0.1
    new = np.array(head.anchor_sizes.tolist())
    # the official BPR of the new anchors, re-derived here, at the label
    # sizes and at both ends of the 0.9-1.1 jitter
    for scale in (0.9, 1.0, 1.1):
        bpr = brute_force_bpr([(w * scale, h * scale) for w, h in sizes],
                              new.reshape(-1, 2))
        assert bpr > 0.98, (scale, bpr)
    assert result.bpr_after > 0.98
    areas = new.reshape(-1, 2).prod(1)
    assert (np.diff(areas) >= 0).all()  # small anchors on stride 8
    assert_anchors(head, new)
    assert_anchors(ema.bbox_head, new)  # the EMA copy too

    # the loss's candidate rule now finds cells for such a box
    box = torch.tensor([[0, 0, 0.5, 0.5, 500 / 2 / IMG_SIZE,
                         20 / 2 / IMG_SIZE]])
    cands = head.loss_module.assigner.candidates(
        box, [(40, 40), (20, 20), (10, 10)], grid_anchors(head))
    assert len(cands) > 0
    fresh = build(tiny_cfg).bbox_head
    assert len(fresh.loss_module.assigner.candidates(
        box, [(40, 40), (20, 20), (10, 10)], grid_anchors(fresh))) == 0

    # a checkpoint carries them: mmengine's load_checkpoint into a model
    # built from the config restores them everywhere
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(state_dict=model.state_dict()), path)
    restored = build(tiny_cfg)
    assert_anchors(restored.bbox_head, TINY_ANCHORS)
    load_checkpoint(restored, str(path), map_location='cpu')
    assert_anchors(restored.bbox_head, new)

    # a checkpoint without anchors (older) loads strictly, config anchors
    old = {k: v for k, v in model.state_dict().items()
           if not k.endswith('anchor_sizes')}
    other = build(tiny_cfg)
    other.load_state_dict(old, strict=True)
    assert_anchors(other.bbox_head, TINY_ANCHORS)


def test_prediction_decodes_with_the_new_anchors(tiny_cfg):
    """predict_by_feat, called before and after set_anchors: all-zero box
    logits decode to w, h = (2 * 0.5)^2 * anchor = the anchor."""
    head = build(tiny_cfg).bbox_head.eval()
    head.test_cfg = ConfigDict(multi_label=False, nms_pre=1000, score_thr=0.5,
                         nms=dict(type='nms', iou_threshold=0.65),
                         max_per_img=10)

    def predicted_size():
        shapes = [(16, 16), (8, 8), (4, 4)]
        cls, box, obj = [], [], []
        for level, (ny, nx) in enumerate(shapes):
            obj_map = torch.full((1, 3, ny, nx), -20.)
            if level == 1:
                obj_map[0, 2, 4, 4] = 20.  # one confident prior
            cls.append(torch.full((1, 3 * 2, ny, nx), 20.))
            box.append(torch.zeros(1, 3 * 4, ny, nx))
            obj.append(obj_map)
        meta = dict(ori_shape=(640, 640), img_shape=(640, 640),
                    scale_factor=(1., 1.), pad_param=np.zeros(4))
        out = head.predict_by_feat(cls, box, obj, batch_img_metas=[meta],
                                   rescale=False)[0]
        b = out.bboxes[0]
        return (b[2:] - b[:2]).tolist()

    np.testing.assert_allclose(predicted_size(), TINY_ANCHORS[1][2],
                               rtol=1e-5)
    new = np.array(TINY_ANCHORS, dtype=float) * 0.5
    head.set_anchors(new)
    np.testing.assert_allclose(predicted_size(), new[1][2], rtol=1e-5)


def test_well_covered_labels_keep_the_anchors(tiny_cfg):
    flat = sum(TINY_ANCHORS, [])

    def near_anchor(rng):  # within 1.5x of a default anchor (in 640 px)
        aw, ah = flat[rng.integers(len(flat))]
        return (aw * 2 * rng.uniform(0.7, 1.5), ah * 2 * rng.uniform(0.7,
                                                                     1.5))

    images = make_images(near_anchor)
    assert brute_force_bpr(train_sizes(images), flat) == 1.0
    model = build(tiny_cfg)
    hook = AutoAnchorHook(img_size=IMG_SIZE)
    hook.before_train(fake_runner(model, LabelDataset(images)))
    assert not hook.result.replaced and hook.result.bpr_after is None
    assert hook.result.bpr_before == 1.0
    assert_anchors(model.bbox_head, TINY_ANCHORS)


def test_reported_bpr_is_the_jittered_brute_force(tiny_cfg):
    """Mixed labels (BPR between 0 and 1): the hook's BPR equals the brute
    force on the sizes scaled by the official per-image jitter drawn
    from the same seed."""
    def mixed(rng):
        return elongated(rng) if rng.random() < 0.3 else (60., 50.)

    images = make_images(mixed, num_images=20)
    hook = AutoAnchorHook(img_size=IMG_SIZE, generations=50, seed=3)
    hook.before_train(fake_runner(build(tiny_cfg), LabelDataset(images)))
    jitter = np.random.default_rng(3).uniform(0.9, 1.1, len(images))
    sizes = []
    for ((w, h), boxes), f in zip(images, jitter):
        s = IMG_SIZE / max(w, h) * f
        sizes += [((x2 - x1) * s, (y2 - y1) * s) for x1, y1, x2, y2 in boxes]
    expected = brute_force_bpr(sizes, sum(TINY_ANCHORS, []))
    assert 0.3 < expected < 0.95
    assert hook.result.bpr_before == pytest.approx(expected)
    assert hook.result.num_labels == len(sizes)


def test_disabled_and_resumed_do_nothing(tiny_cfg):
    images = make_images(elongated)
    for hook, resume in ((AutoAnchorHook(img_size=IMG_SIZE, enabled=False),
                          False), (AutoAnchorHook(img_size=IMG_SIZE), True)):
        model = build(tiny_cfg)
        hook.before_train(fake_runner(model, LabelDataset(images),
                                      resume=resume))
        assert hook.result is None
        assert_anchors(model.bbox_head, TINY_ANCHORS)


def test_image_without_size_is_named(tiny_cfg):
    class NoSize(LabelDataset):
        def get_data_info(self, index):
            info = super().get_data_info(index)
            del info['width'], info['height']
            return info

    with pytest.raises(ValueError, match='image 0 .img0.jpg.*image sizes'):
        AutoAnchorHook(img_size=IMG_SIZE).before_train(
            fake_runner(build(tiny_cfg), NoSize(make_images(elongated, 2))))


def test_own_kmeans_without_scipy(monkeypatch):
    """The fallback k-means (scipy hidden) finds three separated clusters,
    and the ratio metric equals its definition."""
    monkeypatch.setitem(sys.modules, 'scipy.cluster.vq', None)
    rng = np.random.default_rng(0)
    centres = np.array([[1., 1.], [10., 2.], [4., 12.]])
    points = np.concatenate(
        [c + rng.normal(0, 0.1, (30, 2)) for c in centres])
    codes = kmeans_codebook(points, 3, rng)
    codes = codes[np.argsort(codes[:, 0] + 10 * codes[:, 1])]
    np.testing.assert_allclose(codes, centres[[0, 1, 2]], atol=0.1)
    wh, anchor = np.array([[8., 2.]]), np.array([[2., 4.]])
    assert ratio_metric(wh, anchor)[0, 0] == pytest.approx(min(2 / 8, 2 / 4))
